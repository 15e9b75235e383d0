"""The multi-host test bed: several "hosts" on one machine, each a network namespace, joined by a
private switch, with real link cuts for partitions (docs/chaos.md, "Multi-host test bed").

    from cube.testbed import Bed, BedCluster

    with Bed(hosts=("h1", "h2", "h3"), docker=("h2", "h3")) as bed:   # up(); down() on exit
        bed.address("h2")            # "10.77.0.2": hosts get 10.77.0.1, .2, ... in order (/24)
        bed.netns("h2")              # "cube-bed-<id>-h2"
        bed.prefix("h2")             # ["nsenter", "--net=/run/netns/cube-bed-<id>-h2"]: prepend to argv
        bed.popen("h1", argv, log=path)   # a process on h1 (own session; killed at down if still running)
        bed.run("h1", argv)          # run to completion on h1 (subprocess.CompletedProcess, text)
        bed.call_in("h3", fn, *args) # fn in this process, in a thread inside h3's namespace: its
                                     # sockets (urllib, a zmq.Context's I/O threads) belong to h3
        bed.docker_host("h2")        # "unix:///run/cube-bed/<id>/h2/docker.sock", h2's own dockerd
        bed.docker("h2")             # a docker.DockerClient of it (close it)
        bed.partition("h2")          # cut h2 off: its port on the switch goes down
        bed.partition("h1", from_="h2")  # cut only h1 <-> h2 (nftables drop in the switch)
        bed.heal("h2"); bed.heal("h1", from_="h2"); bed.heal()   # undo one cut, or all
        bed.timings                  # seconds: network, dockerd, image, up

        c = BedCluster(bed, manager="h1", grace=3.0)   # cube/harness.py's Cluster, spread over the bed
        c.start_manager()                             # cube-manager on h1, listening on h1's address
        c.start_worker("w1", host="h2")               # DOCKER_HOST = h2's engine, --address = h2's
        c.cli("task", "ls"); c.call("node.ls")        # the CLI runs on h1; call() talks from h1 too
        c.containers(); c.running_by_task()           # over every worker host's engine
        c.close()

Hosts without an engine are for managers, etcd members or clients: start anything there with
`popen` and reach it at `address(host)`. Every host's dockerd has its own data-root, exec-root,
pidfile, socket and cgroup parent under /run/cube-bed/<id>/<host>, and the busybox test image.
Nothing of a bed is ever addressed from the root namespace. `down()` (and `reap()` for beds whose
owner process died, or `scripts/testbed.sh down`) removes every process, container, engine,
cgroup, namespace and file of a bed. Needs root; `missing()` says why a bed cannot be made.
"""
from cube.testbed.bed import Bed, missing, reap
from cube.testbed.cluster import BedCluster

__all__ = ["Bed", "BedCluster", "missing", "reap"]
