"""Container runtimes: Docker for real work, a fake one for unit tests and scale benchmarks."""
from cube.runtime.base import ContainerInfo, ContainerSpec, Runtime, RuntimeEvent, RuntimeFailure

__all__ = ["ContainerInfo", "ContainerSpec", "Runtime", "RuntimeEvent", "RuntimeFailure"]
