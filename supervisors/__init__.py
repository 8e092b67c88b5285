"""supervisors: Erlang/OTP supervision trees and actors on trio, with pykka thread actors.

See ``docs/supervisors.md``. Everything public is re-exported here; the modules are private.
"""

from ._actor import Actor as Actor
from ._actor import ActorRef as ActorRef
from ._actor import Down as Down
from ._actor import Exit as Exit
from ._actor import ExitSignal as ExitSignal
from ._actor import Monitor as Monitor
from ._actor import Reply as Reply
from ._actor import run_beside as run_beside
from ._actor import spawn as spawn
from ._actor import spawn_started as spawn_started
from ._errors import ActorDeadError as ActorDeadError
from ._errors import AlreadyPresent as AlreadyPresent
from ._errors import AlreadyStarted as AlreadyStarted
from ._errors import CallTimeout as CallTimeout
from ._errors import InvalidChildSpec as InvalidChildSpec
from ._errors import MailboxFull as MailboxFull
from ._errors import NotFound as NotFound
from ._errors import Restarting as Restarting
from ._errors import Running as Running
from ._errors import SimpleOneForOneError as SimpleOneForOneError
from ._errors import StartFailed as StartFailed
from ._errors import SupervisorError as SupervisorError
from ._errors import SupervisorGone as SupervisorGone
from ._errors import SupervisorsError as SupervisorsError
from ._reasons import KILLED as KILLED
from ._reasons import NORMAL as NORMAL
from ._reasons import SHUTDOWN as SHUTDOWN
from ._reasons import Error as Error
from ._reasons import ExitReason as ExitReason
from ._reasons import Shutdown as Shutdown
from ._spec import ALL_SIGNIFICANT as ALL_SIGNIFICANT
from ._spec import ANY_SIGNIFICANT as ANY_SIGNIFICANT
from ._spec import BRUTAL_KILL as BRUTAL_KILL
from ._spec import DROP as DROP
from ._spec import INFINITY as INFINITY
from ._spec import KEEP as KEEP
from ._spec import NEVER as NEVER
from ._spec import ONE_FOR_ALL as ONE_FOR_ALL
from ._spec import ONE_FOR_ONE as ONE_FOR_ONE
from ._spec import PERMANENT as PERMANENT
from ._spec import REST_FOR_ONE as REST_FOR_ONE
from ._spec import SIMPLE_ONE_FOR_ONE as SIMPLE_ONE_FOR_ONE
from ._spec import SUPERVISOR as SUPERVISOR
from ._spec import TEMPORARY as TEMPORARY
from ._spec import TRANSIENT as TRANSIENT
from ._spec import WORKER as WORKER
from ._spec import AutoShutdown as AutoShutdown
from ._spec import ChildKind as ChildKind
from ._spec import ChildSpec as ChildSpec
from ._spec import MailboxPolicy as MailboxPolicy
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._spec import SupervisorFlags as SupervisorFlags
from ._spec import SupervisorSpec as SupervisorSpec
from ._strategy import RestartIntensity as RestartIntensity
from ._supervisor import ChildCounts as ChildCounts
from ._supervisor import ChildInfo as ChildInfo
from ._supervisor import SupervisorRef as SupervisorRef
from ._supervisor import SupervisorStats as SupervisorStats
from ._supervisor import TreeSnapshot as TreeSnapshot
from ._supervisor import open_supervisor as open_supervisor
from ._thread import ThreadActor as ThreadActor

__all__ = [
    "ALL_SIGNIFICANT",
    "ANY_SIGNIFICANT",
    "BRUTAL_KILL",
    "DROP",
    "INFINITY",
    "KEEP",
    "KILLED",
    "NEVER",
    "NORMAL",
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "PERMANENT",
    "REST_FOR_ONE",
    "SHUTDOWN",
    "SIMPLE_ONE_FOR_ONE",
    "SUPERVISOR",
    "TEMPORARY",
    "TRANSIENT",
    "WORKER",
    "Actor",
    "ActorDeadError",
    "ActorRef",
    "AlreadyPresent",
    "AlreadyStarted",
    "AutoShutdown",
    "CallTimeout",
    "ChildCounts",
    "ChildInfo",
    "ChildKind",
    "ChildSpec",
    "Down",
    "Error",
    "Exit",
    "ExitReason",
    "ExitSignal",
    "InvalidChildSpec",
    "MailboxFull",
    "MailboxPolicy",
    "Monitor",
    "NotFound",
    "Reply",
    "Restart",
    "RestartIntensity",
    "Restarting",
    "Running",
    "Shutdown",
    "SimpleOneForOneError",
    "StartFailed",
    "Strategy",
    "SupervisorError",
    "SupervisorFlags",
    "SupervisorGone",
    "SupervisorRef",
    "SupervisorSpec",
    "SupervisorStats",
    "SupervisorsError",
    "ThreadActor",
    "TreeSnapshot",
    "open_supervisor",
    "run_beside",
    "spawn",
    "spawn_started",
]

__version__ = "0.1.0"
