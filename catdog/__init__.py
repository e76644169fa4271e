"""catdog: compare CNN architectures on a labelled image folder (two classes or many;
Dogs-vs-Cats first), every experiment tracked in MLflow.

Data flows one way: source -> prepared dataset (manifest) -> tf.data pipeline -> model ->
tuner -> tracking -> compare / register / serve.
"""

__version__ = "0.1.0"
