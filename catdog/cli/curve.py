"""`catdog curve`: would more photos help the sweep's champion?"""

from __future__ import annotations

import click

from catdog import keys
from catdog.cli.common import EXPERIMENT_HELP, POSITIVE, _friendly, _tensorflow


@click.command()
@click.option("--sweep", default="latest", show_default=True, help="A sweep's parent run id.")
@click.option(
    "--fractions",
    default="25%,50%,100%",
    show_default=True,
    help="Shares of the training split to train on: nested, stratified by class.",
)
@click.option(
    "--budget",
    default=None,
    metavar="DURATION",
    help="Time for every fraction together (45m, 2h, 1h30m); a fraction that would "
    "not fit is skipped, saying so. Default: no limit.",
)
@click.option(
    "--epochs",
    type=POSITIVE,
    default=None,
    help="Epochs per fraction. Default: what the champion's trial was given.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(),
    default="data_curve.png",
    show_default=True,
    help="Where to write the plot.",
)
@click.option("--experiment", default=None, help=EXPERIMENT_HELP)
@_friendly
@_tensorflow
def curve(sweep, fractions, budget, epochs, plot_path, experiment):
    """Would more photos help? Train the champion's configuration on growing shares of the
    training photos, fit accuracy = a + b·ln(photos), and read it at twice the photos."""
    from catdog.curve import learning_curve, parse_fractions
    from catdog.plan import parse_budget

    result = learning_curve(
        sweep,
        experiment=experiment,
        fractions=parse_fractions(fractions),
        budget_seconds=parse_budget(budget),
        epochs=epochs,
        plot_path=plot_path,
    )
    click.echo(
        f"{'fraction':>8}  {'photos':>7}  {keys.VAL_ACCURACY:>12}  {'95% interval':<16}  run"
    )
    for p in result.points:
        low, high = p.interval()
        click.echo(
            f"{p.fraction:>8.0%}  {p.n_train:>7,}  {p.accuracy:>12.4f}  "
            f"[{low:.3f}, {high:.3f}]    {p.run_id}"
        )
    for line in result.skipped:
        click.echo(line)
    click.echo(result.sentence)
    if result.backtest:
        click.echo(result.backtest.sentence)
    click.echo(
        f"plot written to {result.plot} and logged to sweep run {result.sweep_run_id}", err=True
    )
