"""One child model: its recipe, network and training loops, the embedding modules, the trainer actor.

``_child.py`` is the network and its one-at-a-time training loop, ``_embeddings.py`` the frozen
embedding modules, ``_batched.py`` trains many children at once: ``_buckets.py`` groups them into
buckets (``make_buckets`` under a ``CostModel``), ``_batched_net.py`` trains a bucket as one
network (``BucketNetwork``, its hand-written backward pass, and ``BucketAdam``) on a task's
feature tables (``TaskTables``), ``_observer.py`` calls an early-stop observer, ``_trainer.py`` is the Ray
actor that trains planned children and hands their rows to a sink.
"""

from cluster.child._batched import TaskTables, train_children
from cluster.child._batched_net import BucketAdam, BucketNetwork
from cluster.child._buckets import CostModel, make_buckets
from cluster.child._child import ChildNetwork, ChildPlan, ChildResult, TrainRecipe, child_plan, resolve_device, train_child
from cluster.child._embeddings import EmbeddingBank, default_bank, median_bandwidth, parse_module_name
from cluster.child._observer import observer_features
from cluster.child._trainer import ChildTrainer, ChunkAck, GuardedObserver, WorkItem, close_trainers, stop_fields

__all__ = ["BucketAdam", "BucketNetwork", "ChildNetwork", "ChildPlan", "ChildResult", "ChildTrainer", "ChunkAck",
           "CostModel", "EmbeddingBank", "GuardedObserver", "TaskTables", "TrainRecipe", "WorkItem", "child_plan",
           "close_trainers", "default_bank", "make_buckets", "median_bandwidth", "observer_features",
           "parse_module_name", "resolve_device", "stop_fields", "train_child", "train_children"]
