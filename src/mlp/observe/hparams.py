"""The HParams tab: the declared experiment (which columns the table opens on) and one run's
hyperparameters, written into the run's own folder (not a sub-run, as ``SummaryWriter.add_hparams``
would make), so one training is one session.  The metrics of its split sub-runs (``train/``,
``val/``, ``test/``, see ``mlp.observe.tensorboard``) are the session's metric groups."""

from __future__ import annotations

from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from torch.utils.tensorboard.summary import hparams

from mlp.config import activation_label

# The HParams table: the first five columns shown (each named as in the config, dotted), then
# the metrics, the first five shown.  A metric is (group, tag): the group is the sub-run that holds
# it ("" for the run's own folder).
MAIN_HPARAMS = ("model.activation", "model.depth", "model.init", "model.width", "optimizer.lr")
HPARAM_METRICS = {("test", "accuracy/epoch"): "test accuracy", ("val", "accuracy/epoch"): "val accuracy",
                  ("", "summary/inactive_max"): "largest inactive fraction",
                  ("", "summary/signal_ratio_first"): "signal layer 1 / last, first step",
                  ("test", "loss/epoch"): "test loss", ("val", "loss/epoch"): "val loss",
                  ("train", "accuracy/epoch"): "train accuracy", ("train", "loss/epoch"): "train loss",
                  ("", "summary/signal_ratio_last"): "signal layer 1 / last, at the end"}
METRIC_DESCRIPTIONS = {  # the split metrics' (group, tag) → what the column holds (the last value written)
    ("test", "accuracy/epoch"): "Test accuracy of the best checkpoint (on validation), measured once at the end.",
    ("val", "accuracy/epoch"): "Validation accuracy after the last epoch (the best epoch's is in metrics.json).",
    ("train", "accuracy/epoch"): "Training accuracy of the last epoch, counted during training.",
    ("test", "loss/epoch"): "Test cross-entropy of the best checkpoint, measured once at the end.",
    ("val", "loss/epoch"): "Validation cross-entropy after the last epoch.",
    ("train", "loss/epoch"): "Mean training cross-entropy of the last epoch.",
}


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """Every config field as ``section.field``.  Floats stay numbers; integers become text, since the
    HParams table prints every number with five significant digits (a batch size of 64 as 64.000);
    booleans, lists and None become text too."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "activation" and isinstance(value, dict):  # leaky_relu(negative_slope=0.1)
            flat[key] = activation_label(value)
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in hparam_values(value).items()})
        elif isinstance(value, bool):
            flat[key] = "true" if value else "false"
        elif isinstance(value, int):
            flat[key] = str(value)
        elif isinstance(value, (float, str)):
            flat[key] = value
        elif value is None:
            flat[key] = "none"  # a text value keeps the column in the table for every run
        elif isinstance(value, list):
            flat[key] = "[" + ", ".join(map(str, value)) + "]"
        else:
            flat[key] = str(value)
    return flat


def hparam_summaries(values: dict[str, Any]) -> list[Summary]:
    """The declared experiment and this run's session start.  TensorBoard's HParams table shows five
    hyperparameter columns at first, those it is told "differ" first and then by name: the five
    MAIN_HPARAMS.  Every column is named as the config key it is (model.width, not width)."""
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG, PLUGIN_DATA_VERSION, PLUGIN_NAME
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from mlp.observe.tensorboard import describe

    _, session_start, _ = hparams(values, {})
    infos = [api_pb2.HParamInfo(
        name=name, display_name=name, differs=name in MAIN_HPARAMS,
        type=api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, float) else api_pb2.DATA_TYPE_STRING)
        for name, value in values.items()]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag), display_name=label,
                                  description=METRIC_DESCRIPTIONS.get((group, tag)) or describe(tag))
               for (group, tag), label in HPARAM_METRICS.items()]
    content = HParamsPluginData(experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics),
                                version=PLUGIN_DATA_VERSION)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME,
                                                                      content=content.SerializeToString()))
    return [Summary(value=[Summary.Value(tag=EXPERIMENT_TAG, metadata=metadata)]), session_start]
