"""Model-based fuzzing of supervision trees (see ``docs/supervisors.md``).

* ``_model``: a pure reference model of OTP's ``supervisor.erl`` rules: a tree of plain data,
  commands, and :func:`step`, which gives the events OTP would produce.
* ``_generate``: Hypothesis strategies for trees (:func:`supervisor_trees`) and for command
  sequences that stay valid (:func:`command_sequences`, :func:`scenarios`).
* ``_fuzz``: the harness that runs a scenario against the runtime and the model step by step
  (:func:`check_against_model`, :func:`run_scenario`) and a ready :func:`run_fuzz`.
"""

from ._fuzz import Runtime as Runtime
from ._fuzz import check_against_model as check_against_model
from ._fuzz import events_match as events_match
from ._fuzz import run_fuzz as run_fuzz
from ._fuzz import run_scenario as run_scenario
from ._generate import command_sequences as command_sequences
from ._generate import commands as commands
from ._generate import scenarios as scenarios
from ._generate import supervisor_trees as supervisor_trees
from ._model import AdvanceClock as AdvanceClock
from ._model import Burst as Burst
from ._model import ChildExit as ChildExit
from ._model import ChildModel as ChildModel
from ._model import Command as Command
from ._model import DeleteChild as DeleteChild
from ._model import ModelState as ModelState
from ._model import Parallel as Parallel
from ._model import RestartChild as RestartChild
from ._model import StartChild as StartChild
from ._model import Step as Step
from ._model import SupervisorModel as SupervisorModel
from ._model import TerminateChild as TerminateChild
from ._model import initial_state as initial_state
from ._model import step as step
from ._model import step_alternatives as step_alternatives
from ._model import stop_root as stop_root

__all__ = [
    "AdvanceClock",
    "Burst",
    "ChildExit",
    "ChildModel",
    "Command",
    "DeleteChild",
    "ModelState",
    "Parallel",
    "RestartChild",
    "Runtime",
    "StartChild",
    "Step",
    "SupervisorModel",
    "TerminateChild",
    "check_against_model",
    "command_sequences",
    "commands",
    "events_match",
    "initial_state",
    "run_fuzz",
    "run_scenario",
    "scenarios",
    "step",
    "step_alternatives",
    "stop_root",
    "supervisor_trees",
]
