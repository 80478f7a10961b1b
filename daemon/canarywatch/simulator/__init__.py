"""A faithful simulated Kubernetes API server plus a client-go-like Flagger Event recorder.

async with SimulatedApiServer() as api:      # http://127.0.0.1:PORT in api.url
    api.store.create("canaries", {...})
    FlaggerEventRecorder(api.store, clock).record(canary, "Normal", "...")
"""

from canarywatch.simulator.apiserver import ServerSettings, SimulatedApiServer
from canarywatch.simulator.event_recorder import FlaggerEventRecorder, Outcome, Recorded
from canarywatch.simulator.faults import FaultPlan, FaultRule, StreamAction
from canarywatch.simulator.store import ApiError, Change, Store, WatchType

__all__ = [
    "ApiError",
    "Change",
    "FaultPlan",
    "FaultRule",
    "FlaggerEventRecorder",
    "Outcome",
    "Recorded",
    "ServerSettings",
    "SimulatedApiServer",
    "Store",
    "StreamAction",
    "WatchType",
]
