"""Read a run's TensorBoard events as TensorBoard itself does (values in the tensor format that
mlp writes, or the older format), behind the few methods of the old ``EventAccumulator`` the
tests use: ``Tags()``, ``Scalars(tag)``, ``Images(tag)``, ``Histograms(tag)``, ``SummaryMetadata(tag)``."""

from __future__ import annotations

from collections import namedtuple

from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

Scalar = namedtuple("Scalar", "step value")
Image = namedtuple("Image", "step width height")
Histogram = namedtuple("Histogram", "step buckets")  # buckets: rows of (left edge, right edge, count)

PLUGINS = {"scalars": "scalars", "images": "images", "histograms": "histograms"}


class Events:
    def __init__(self, run):
        self.accumulator = plugin_event_accumulator.EventAccumulator(
            str(run), size_guidance={"tensors": 0, "graph": 1}).Reload()

    def Tags(self) -> dict:
        content = self.accumulator.PluginTagToContent
        tags = {kind: sorted(content(plugin)) if plugin in self.accumulator.ActivePlugins() else []
                for kind, plugin in PLUGINS.items()}
        tags["graph"] = self.accumulator.Tags().get("graph", False)
        tags["tensors"] = self.accumulator.Tags()["tensors"]
        return tags

    def _values(self, tag):
        return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in self.accumulator.Tensors(tag)]

    def Scalars(self, tag):
        return [Scalar(step, float(value)) for step, value in self._values(tag)]

    def Images(self, tag):
        return [Image(step, int(value[0]), int(value[1])) for step, value in self._values(tag)]

    def Histograms(self, tag):
        return [Histogram(step, value) for step, value in self._values(tag)]

    def Tensors(self, tag):
        return self.accumulator.Tensors(tag)

    def SummaryMetadata(self, tag):
        return self.accumulator.SummaryMetadata(tag)


def read_events(run) -> Events:
    return Events(run)
