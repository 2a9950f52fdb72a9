"""One child model: its recipe, network and training loops, the embedding modules, the trainer actor.

``_child.py`` is the network and its one-at-a-time training loop, ``_embeddings.py`` the frozen
embedding modules, ``_batched.py`` (with ``_buckets.py``, ``_batched_net.py``) trains many
children at once, ``_observer.py`` calls an early-stop observer, ``_trainer.py`` is the Ray
actor that trains planned children and hands their rows to a sink.
"""

from cluster.child._batched import train_children
from cluster.child._child import ChildNetwork, ChildPlan, ChildResult, TrainRecipe, child_plan, resolve_device, train_child
from cluster.child._embeddings import EmbeddingBank, default_bank, median_bandwidth, parse_module_name
from cluster.child._trainer import ChildTrainer, ChunkAck, GuardedObserver, WorkItem, close_trainers, stop_fields

__all__ = ["ChildNetwork", "ChildPlan", "ChildResult", "ChildTrainer", "ChunkAck", "EmbeddingBank", "GuardedObserver",
           "TrainRecipe", "WorkItem", "child_plan", "close_trainers", "default_bank", "median_bandwidth",
           "parse_module_name", "resolve_device", "stop_fields", "train_child", "train_children"]
