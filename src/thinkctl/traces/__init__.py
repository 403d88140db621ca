"""Labelled reasoning traces: collection from a live model or from recorded generations, append-only storage,
readers of recorded outputs.

>>> from thinkctl.traces import CollectConfig
>>> CollectConfig(task="modeq", samples=2).every
16
"""

from thinkctl.traces.collect import CollectConfig, collect, collect_generations, resolve_layers, token_confidence
from thinkctl.traces.generations import GenerationsFile, read_generations, task_for_generations
from thinkctl.traces.readers import RecordedTraces, read_recorded, read_replay, read_steps, recorded_files
from thinkctl.traces.store import CheckpointArrays, SampleArrays, TraceStore

__all__ = ["CollectConfig", "collect", "collect_generations", "resolve_layers", "token_confidence",
           "GenerationsFile", "read_generations", "task_for_generations", "TraceStore", "CheckpointArrays",
           "SampleArrays", "RecordedTraces", "read_recorded", "read_replay", "read_steps", "recorded_files"]
