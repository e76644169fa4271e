"""`catdog data download|prepare` and `catdog archs`: the images, and the architectures."""

from __future__ import annotations

import json

import click

from catdog import keys
from catdog.cli.common import IMAGE_SIZE, _friendly, _tensorflow
from catdog.data.download import DEFAULT_DATASET, SOURCES


@click.group()
def data():
    """Get and prepare the images."""


@data.command("download")
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    default=None,
    help="Default: kaggle when credentials exist or --dataset names another dataset, "
    "else Microsoft's PetImages.",
)
@click.option(
    "--dataset",
    default=DEFAULT_DATASET,
    show_default=True,
    help="Any Kaggle dataset, as owner/name.",
)
@click.option("--dest", default="data", show_default=True, type=click.Path())
@_friendly
def data_download(source, dataset, dest):
    """Download a dataset (any Kaggle one; Dogs-vs-Cats from PetImages without an account)."""
    from catdog.data.download import download

    click.echo(download(source=source, dataset=dataset, dest=dest))


@data.command("prepare")
@click.argument("source", type=click.Path())
@click.option(
    "--dest", type=click.Path(), default=None, help="Default: data/prepared/<source name>."
)
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option(
    "--test-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Held out only where the source has no test split.",
)
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing prepared dataset.")
@_friendly
def data_prepare(source, dest, val_fraction, test_fraction, seed, overwrite):
    """Validate, clean, de-duplicate and split a zip or folder of labelled images.

    Layouts: <split>/<class>/* or <class>/* with any class names (two or more), and the
    Dogs-vs-Cats downloads (salader, PetImages, the competition's flat train/)."""
    from catdog.data import dataset_name, is_imbalanced, prepare, prepared_dir

    result = prepare(
        source,
        dest or prepared_dir(source),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        overwrite=overwrite,
    )
    click.echo(
        json.dumps(
            {
                "root": str(result.root),
                "digest": result.digest,
                "layout": result.summary["layout"],
                "name": dataset_name(result.root),
                "classes": result.summary[keys.CLASSES],
                "counts": result.counts,
                "imbalanced": is_imbalanced(result.root),
            },
            indent=2,
            ensure_ascii=False,
        )
    )


@click.command()
@click.option(
    "--image-size",
    type=IMAGE_SIZE,
    default=None,
    help="Count parameters at this size (default: each architecture's own).",
)
@click.option("--pattern", default="*", show_default=True, help="Filter names, e.g. 'res*'.")
@_friendly
@_tensorflow
def archs(image_size, pattern):
    """List the registered architectures with their parameter counts."""
    from catdog import models

    click.echo(f"{'name':<11} {'family':<9} {'size':>4} {'params':>11}  description")
    for name in models.names(pattern):
        entry = models.get(name)
        size = image_size or entry.default_image_size
        click.echo(
            f"{name:<11} {entry.family:<9} {size:>4} {entry.param_count(size):>11,}  "
            f"{entry.description}"
        )
