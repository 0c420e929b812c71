"""What a client waiting in WaitForUpdatesEx receives from the vCenter simulator, read with pyvmomi.

The simulator computes update sets incrementally (tools/vcsim/collector.go) instead of
re-collecting the whole filter for every change; these tests pin the contents a waiting client
gets for each kind of change ftreport reacts to (failover, move, power, a VM created or
destroyed): the right objects, kinds and values, and no property outside the filter's pathSet.

One collector holds two filters: ftreport's own (a container view of VMs, hosts and clusters
with its leaf paths) and one of parent paths of VMs, for which a change below a watched path is
reported once, as that path with the object's whole current value.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from ftreport.sources.esx import CLUSTER_PROPERTIES, HOST_PROPERTIES, VM_PROPERTIES
from tests.kit.wait import wait_until

from .conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim

PQ = vmodl.query.PropertyCollector
LEAF = {"VirtualMachine": VM_PROPERTIES, "HostSystem": HOST_PROPERTIES, "ClusterComputeResource": CLUSTER_PROPERTIES}
PARENT = {"VirtualMachine": ("name", "config.ftInfo", "summary.runtime")}


@dataclass
class Seen:
    """The updates of one object in one filter, merged over the update sets they came in."""

    kinds: list[str] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)


class Watch:
    """A property collector with ftreport's filter and a parent-path one, waited on as ftreport does."""

    def __init__(self, content: Any, root: bool = False) -> None:
        self.content = content
        # ftreport creates its own collector; other clients use the session's root one.
        self.pc = content.propertyCollector if root else content.propertyCollector.CreatePropertyCollector()
        self.filters = {"leaf": self._filter(LEAF), "parent": self._filter(PARENT)}
        self.version = ""

    def _filter(self, paths: dict[str, tuple[str, ...]]) -> Any:
        types = [getattr(vim, t) for t in paths]
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, types, True)
        spec = PQ.FilterSpec(
            objectSet=[PQ.ObjectSpec(obj=view, skip=True, selectSet=[
                PQ.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[PQ.PropertySpec(type=getattr(vim, t), pathSet=list(p)) for t, p in paths.items()])
        return self.pc.CreateFilter(spec, partialUpdates=False)

    def wait(self) -> dict[tuple[str, str], Seen]:
        """One WaitForUpdatesEx: (filter name, moref) -> what it said; checks every name is watched."""
        res = self.pc.WaitForUpdatesEx(self.version, PQ.WaitOptions(maxWaitSeconds=1, maxObjectUpdates=2000))
        out: dict[tuple[str, str], Seen] = {}
        if res is None:
            return out
        self.version = res.version
        for fu in res.filterSet:
            which = next(k for k, f in self.filters.items() if f == fu.filter)
            paths = LEAF if which == "leaf" else PARENT
            for ou in fu.objectSet:
                kind = type(ou.obj).__name__.split(".")[-1]
                names = [c.name for c in ou.changeSet]
                assert len(names) == len(set(names)), f"{which} {ou.obj._moId}: a name twice in {names}"
                assert set(names) <= set(paths[kind]), f"{which} {ou.obj._moId}: unwatched {names}"
                seen = out.setdefault((which, ou.obj._moId), Seen())
                seen.kinds.append(ou.kind)
                seen.changes.update({c.name: c.val for c in ou.changeSet})
        return out

    def until(self, done: Callable[[dict[tuple[str, str], Seen]], bool]) -> dict[tuple[str, str], Seen]:
        """Waits until the merged updates satisfy done; then one more wait must bring nothing."""
        got: dict[tuple[str, str], Seen] = {}
        for _ in range(20):
            for key, seen in self.wait().items():
                merged = got.setdefault(key, Seen())
                merged.kinds += seen.kinds
                merged.changes.update(seen.changes)
            if done(got):
                assert self.wait() == {}, "updates after the expected ones"
                return got
        raise AssertionError(f"updates never complete: {got}")


def _connect(vcsim: Vcsim) -> Any:
    parts = urlsplit(vcsim.url)
    ctx = ssl.create_default_context(cafile=str(vcsim.tls.ca_path))
    return SmartConnect(host=parts.hostname, port=parts.port, path=parts.path, user=VCSIM_USER,
                        pwd=VCSIM_PASSWORD, sslContext=ctx)


@pytest.fixture
def content(vcsim: Vcsim) -> Iterator[Any]:
    si = _connect(vcsim)
    yield si.RetrieveContent()
    Disconnect(si)


def _finish(task: Any) -> None:
    """Waits for a task (pyVim.task.WaitForTask of pyvmomi 8.0.0.1 raises AttributeError here)."""
    wait_until(lambda: task.info.state in ("success", "error"), 30, "the task to end")
    assert task.info.state == "success", task.info.error


def _has(*keys: tuple[str, str]) -> Callable[[dict[tuple[str, str], Seen]], bool]:
    return lambda got: all(k in got for k in keys)


def test_waiting_client_sees_each_change_with_watched_properties_only(vcsim: Vcsim, content: Any) -> None:
    watch = Watch(content)
    state = vcsim.state(all_objects=True)
    initial = watch.wait()
    vms = {v["moref"]: v for v in state["vms"]}
    assert {m for (f, m) in initial if f == "leaf"} >= set(vms) | {h["moref"] for h in state["hosts"]}
    assert {m for (f, m) in initial if f == "parent"} == set(vms)
    for (which, moref), seen in initial.items():
        assert seen.kinds == ["enter"]
        kind = "VirtualMachine" if moref in vms else "HostSystem" if moref.startswith("host-") else None
        if which == "leaf" and kind:
            assert set(seen.changes) == set(LEAF[kind]), moref  # every watched path, empty ones too
    primary = state["ft"][0]["instances"][0]
    assert initial[("leaf", primary["moref"])].changes["config.ftInfo.role"] == 1

    # Failover: every instance gets its new role and instance list, reported once per VM; the
    # old primary's object becomes the new backup on another host with a new instanceUuid.
    after = vcsim.failover("0")["ft"][0]["instances"]
    keys = [(f, i["moref"]) for i in after for f in watch.filters]
    got = watch.until(_has(*keys))
    assert sorted(got) == sorted(keys)
    for role, inst in enumerate(after, 1):
        leaf, parent = got[("leaf", inst["moref"])], got[("parent", inst["moref"])]
        assert leaf.kinds == parent.kinds == ["modify"]
        expect = {"config.ftInfo.role": role, "config.ftInfo.instanceUuids": inst["ftInstanceUuids"]}
        if inst["moref"] == primary["moref"]:
            expect["runtime.host"] = inst["host"]
        assert {k: getattr(v, "_moId", v) for k, v in leaf.changes.items()} == expect
        assert set(parent.changes) == {"config.ftInfo"} | ({"summary.runtime"} if inst is after[-1] else set())
        ft = parent.changes["config.ftInfo"]
        assert (ft.role, list(ft.instanceUuids)) == (role, inst["ftInstanceUuids"])
    assert got[("parent", primary["moref"])].changes["summary.runtime"].host._moId == after[-1]["host"]

    # Move and power change of a VM outside the FT pair.
    ft_morefs = {i["moref"] for i in after}
    vm = next(v for v in state["vms"] if v["moref"] not in ft_morefs)
    host = next(h for h in state["hosts"] if h["moref"] != vm["host"])
    vcsim.move(vm["name"], host["name"])
    got = watch.until(_has(("leaf", vm["moref"]), ("parent", vm["moref"])))
    assert sorted(got) == [("leaf", vm["moref"]), ("parent", vm["moref"])]
    assert got[("leaf", vm["moref"])].changes["runtime.host"]._moId == host["moref"]
    assert list(got[("leaf", vm["moref"])].changes) == ["runtime.host"]
    runtime = got[("parent", vm["moref"])].changes["summary.runtime"]
    assert (runtime.host._moId, runtime.powerState) == (host["moref"], vm["powerState"])

    vcsim.power(vm["name"], "poweredOff")
    got = watch.until(_has(("leaf", vm["moref"]), ("parent", vm["moref"])))
    assert sorted(got) == [("leaf", vm["moref"]), ("parent", vm["moref"])]
    assert got[("leaf", vm["moref"])].changes == {"runtime.powerState": "poweredOff"}
    assert got[("parent", vm["moref"])].changes["summary.runtime"].powerState == "poweredOff"

    # A VM created (a clone) enters both filters with every watched path; a destroyed one leaves.
    obj = next(o for o in content.viewManager.CreateContainerView(
        content.rootFolder, [vim.VirtualMachine], True).view if o._moId == vm["moref"])
    _finish(obj.CloneVM_Task(folder=obj.parent, name="clone-of-" + vm["name"],
                                 spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))
    clone = next(o for o in content.viewManager.CreateContainerView(
        content.rootFolder, [vim.VirtualMachine], True).view if o.name == "clone-of-" + vm["name"])
    got = watch.until(_has(("leaf", clone._moId), ("parent", clone._moId)))
    assert sorted(got) == [("leaf", clone._moId), ("parent", clone._moId)]
    leaf = got[("leaf", clone._moId)]
    assert leaf.kinds[0] == "enter" and set(leaf.changes) == set(VM_PROPERTIES)
    assert leaf.changes["config.uuid"] == clone.config.uuid
    assert leaf.changes["runtime.host"]._moId == clone.runtime.host._moId
    assert leaf.changes["config.ftInfo.role"] is None  # not an FT VM: an empty value, still listed
    assert got[("parent", clone._moId)].changes["name"] == clone.name

    _finish(obj.Destroy_Task())
    got = watch.until(_has(("leaf", vm["moref"]), ("parent", vm["moref"])))
    assert sorted(got) == [("leaf", vm["moref"]), ("parent", vm["moref"])]
    assert got[("leaf", vm["moref"])].kinds == got[("parent", vm["moref"])].kinds == ["leave"]
    assert got[("leaf", vm["moref"])].changes == {}
    watch.pc.Destroy()


def test_every_session_waiting_on_its_root_collector_sees_a_failover(vcsim: Vcsim) -> None:
    """Each session has its own instance of the root PropertyCollector; all of them get updates
    (govmomi's collectors shared one registration: only the session that waited last did)."""
    sessions = [_connect(vcsim) for _ in range(2)]
    try:
        watches = [Watch(si.RetrieveContent(), root=True) for si in sessions]
        for watch in watches:
            assert watch.wait()  # the initial contents
        after = vcsim.failover("0")["ft"][0]["instances"]
        keys = [(f, i["moref"]) for i in after for f in ("leaf", "parent")]
        for watch in watches:
            got = watch.until(_has(*keys))
            assert sorted(got) == sorted(keys)
            for role, inst in enumerate(after, 1):
                assert got[("leaf", inst["moref"])].changes["config.ftInfo.role"] == role
    finally:
        for si in sessions:
            Disconnect(si)
