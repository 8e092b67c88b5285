"""Model-based fuzzing of supervision trees: a pure reference model of OTP's supervisor rules,
Hypothesis strategies for trees and commands, and a harness that runs them against the runtime.
"""

from ._generate import command_sequences as command_sequences
from ._generate import commands as commands
from ._generate import supervisor_trees as supervisor_trees
from ._model import AdvanceClock as AdvanceClock
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
from ._model import stop_root as stop_root
