"""The bottom layer: the data model (FeatureCloud, Suite), the analysis contract (Params, Result),
the one Checkpoint, errors and small utilities.  Imports nothing else from featuregeo."""
