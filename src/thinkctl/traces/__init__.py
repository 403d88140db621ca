"""Labelled reasoning traces: collection from a live model, append-only storage, readers of recorded outputs.

>>> from thinkctl.traces import CollectConfig
>>> CollectConfig(task="modeq", samples=2).every
16
"""

from thinkctl.traces.collect import CollectConfig, collect, resolve_layers, token_confidence
from thinkctl.traces.readers import RecordedTraces, read_recorded, read_replay, read_steps, recorded_files
from thinkctl.traces.store import CheckpointArrays, SampleArrays, TraceStore

__all__ = ["CollectConfig", "collect", "resolve_layers", "token_confidence", "TraceStore", "CheckpointArrays",
           "SampleArrays", "RecordedTraces", "read_recorded", "read_replay", "read_steps", "recorded_files"]
