// Command ftvcsim runs govmomi's vCenter simulator with fault-tolerant (FT) VM pairs,
// served over TLS with a caller-supplied certificate, plus a small control endpoint on
// loopback through which tests change the inventory at run time (FT failover, power
// state, moving a VM to another host) or end every client session (as when they expire).
//
// Every VM has vSphere's runtime.faultToleranceState: notConfigured outside FT groups, and
// for a group's instances the group's state, which goes through a failover as vSphere's does:
// running -> needSecondary (the primary was lost and no secondary runs yet) -> starting (a new
// secondary is being made) -> running. A lost instance's VM object is kept without a host (so
// no client reports it) and becomes the next new secondary.
//
// Every run-time change goes through simulator.Map.Update with leaf property paths
// (for example "config.ftInfo.role"), inside simulator.Map.WithLock, so that clients
// waiting in WaitForUpdatesEx on those leaf paths see it.
//
// Clients waiting in WaitForUpdatesEx get those changes incrementally (collector.go):
// govmomi's own collector re-collected the whole filter for each change, which took
// seconds per FT failover with tens of thousands of VMs; the update contents are unchanged.
//
// When ready it writes one JSON line {"url": ..., "control": ..., "pid": ...} to stdout
// and, with -ready-file, to that file (written atomically).
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// ftGroup is one FT VM: its instances in vSphere's order (primary first), the VM objects of
// instances it lost (hidden: no host), and its runtime.faultToleranceState.
type ftGroup struct {
	UUID      string
	Instances []*simulator.VirtualMachine
	lost      []*simulator.VirtualMachine
	State     types.VirtualMachineFaultToleranceState
}

type controller struct {
	mu     sync.Mutex // serialises control requests
	groups []*ftGroup
	serial int
}

type vmState struct {
	Name            string   `json:"name"`
	Moref           string   `json:"moref"`
	UUID            string   `json:"uuid"`
	InstanceUUID    string   `json:"instanceUuid"`
	Host            string   `json:"host"`
	HostName        string   `json:"hostName"`
	HostUUID        string   `json:"hostUuid"`
	PowerState      string   `json:"powerState"`
	FtRole          int32    `json:"ftRole,omitempty"`
	FtInstanceUUIDs []string `json:"ftInstanceUuids,omitempty"`
	FtState         string   `json:"ftState"`
}

type hostState struct {
	Name  string `json:"name"`
	Moref string `json:"moref"`
	UUID  string `json:"uuid"`
}

func hostOf(vm *simulator.VirtualMachine) *simulator.HostSystem {
	if vm.Runtime.Host == nil {
		return nil
	}
	h, _ := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem)
	return h
}

func describeVM(vm *simulator.VirtualMachine) vmState {
	s := vmState{
		Name:         vm.Name,
		Moref:        vm.Self.Value,
		UUID:         vm.Config.Uuid,
		InstanceUUID: vm.Config.InstanceUuid,
		PowerState:   string(vm.Runtime.PowerState),
		FtState:      string(vm.Runtime.FaultToleranceState),
	}
	if h := hostOf(vm); h != nil {
		s.Host = h.Self.Value
		s.HostName = h.Name
		s.HostUUID = h.Hardware.SystemInfo.Uuid
	}
	if vm.Config.FtInfo != nil {
		ft := vm.Config.FtInfo.GetFaultToleranceConfigInfo()
		s.FtRole = ft.Role
		s.FtInstanceUUIDs = append([]string(nil), ft.InstanceUuids...)
	}
	return s
}

func allVMs() []*simulator.VirtualMachine {
	var vms []*simulator.VirtualMachine
	for _, e := range simulator.Map.All("VirtualMachine") {
		vms = append(vms, e.(*simulator.VirtualMachine))
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	return vms
}

func allHosts() []*simulator.HostSystem {
	var hosts []*simulator.HostSystem
	for _, e := range simulator.Map.All("HostSystem") {
		hosts = append(hosts, e.(*simulator.HostSystem))
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	return hosts
}

func findVM(name string) *simulator.VirtualMachine {
	for _, vm := range allVMs() {
		if vm.Name == name || vm.Self.Value == name || vm.Config.InstanceUuid == name {
			return vm
		}
	}
	return nil
}

func findHost(name string) *simulator.HostSystem {
	for _, h := range allHosts() {
		if h.Name == name || h.Self.Value == name || h.Hardware.SystemInfo.Uuid == name {
			return h
		}
	}
	return nil
}

// update applies leaf-path changes to a managed object so WaitForUpdatesEx sees them.
// Fields behind interfaces (config.ftInfo) are set by the caller's set function first,
// since mo.ApplyPropertyChange cannot reach through them.
func update(obj mo.Reference, set func(), changes []types.PropertyChange) {
	simulator.Map.WithLock(obj, func() {
		if set != nil {
			set()
		}
		simulator.Map.Update(obj, changes)
	})
}

func setFt(vm *simulator.VirtualMachine, role int32, instances []string, state types.VirtualMachineFaultToleranceState) {
	ids := append([]string(nil), instances...)
	update(vm, func() {
		vm.Config.FtInfo = &types.FaultToleranceConfigInfo{Role: role, InstanceUuids: ids}
	}, []types.PropertyChange{
		{Name: "config.ftInfo.role", Val: role},
		{Name: "config.ftInfo.instanceUuids", Val: ids},
		{Name: "runtime.faultToleranceState", Val: state},
	})
}

// clearFt ends a VM's FT configuration (FT turned off): no ftInfo, state notConfigured.
func clearFt(vm *simulator.VirtualMachine) {
	update(vm, func() {
		vm.Config.FtInfo = nil
	}, []types.PropertyChange{
		{Name: "config.ftInfo.role", Val: nil},
		{Name: "config.ftInfo.instanceUuids", Val: nil},
		{Name: "runtime.faultToleranceState", Val: types.VirtualMachineFaultToleranceStateNotConfigured},
	})
}

// hide takes a lost instance's VM object off its host: with no runtime.host no client reports
// it, as the instance of a failed host is gone.
func hide(vm *simulator.VirtualMachine) {
	from := hostOf(vm)
	update(vm, func() {
		vm.Config.FtInfo = nil
	}, []types.PropertyChange{
		{Name: "runtime.host", Val: nil},
		{Name: "summary.runtime.host", Val: nil},
		{Name: "config.ftInfo.role", Val: nil},
		{Name: "config.ftInfo.instanceUuids", Val: nil},
		{Name: "runtime.faultToleranceState", Val: types.VirtualMachineFaultToleranceStateNotConfigured},
	})
	relist(vm, from, nil)
}

// destroy removes a VM from the inventory as Destroy_Task does: from its host, resource pool and
// folder, then from the registry (clients watching get a leave update).
func destroy(vm *simulator.VirtualMachine) {
	relist(vm, hostOf(vm), nil)
	if vm.ResourcePool != nil {
		if pool, ok := simulator.Map.Get(*vm.ResourcePool).(*simulator.ResourcePool); ok {
			simulator.Map.RemoveReference(pool, &pool.Vm, vm.Self)
		}
	}
	if vm.Parent != nil {
		if folder, ok := simulator.Map.Get(*vm.Parent).(*simulator.Folder); ok {
			simulator.Map.RemoveReference(folder, &folder.ChildEntity, vm.Self)
		}
	}
	simulator.Map.Remove(vm.Self)
}

func moveVM(vm *simulator.VirtualMachine, host *simulator.HostSystem) {
	from := hostOf(vm)
	ref := host.Self
	update(vm, func() {
		vm.Runtime.Host = &ref
		vm.Summary.Runtime.Host = &ref
	}, []types.PropertyChange{
		{Name: "runtime.host", Val: ref},
		{Name: "summary.runtime.host", Val: ref},
	})
	relist(vm, from, host)
}

// relist keeps the host side consistent with the VM side, as vCenter does: a VM that now runs
// on "to" leaves the "vm" list of "from" and joins the one of "to". Clients that read hosts
// (HostSystem.vm) rather than VMs (runtime.host) would otherwise see it on its old host.
func relist(vm *simulator.VirtualMachine, from, to *simulator.HostSystem) {
	if from == to {
		return
	}
	if from != nil {
		var kept []types.ManagedObjectReference
		simulator.Map.WithLock(from, func() {
			for _, r := range from.Vm {
				if r != vm.Self {
					kept = append(kept, r)
				}
			}
		})
		update(from, func() { from.Vm = kept }, []types.PropertyChange{{Name: "vm", Val: kept}})
	}
	if to != nil {
		var list []types.ManagedObjectReference
		simulator.Map.WithLock(to, func() {
			list = append([]types.ManagedObjectReference(nil), to.Vm...)
		})
		for _, r := range list {
			if r == vm.Self {
				return
			}
		}
		list = append(list, vm.Self)
		update(to, func() { to.Vm = list }, []types.PropertyChange{{Name: "vm", Val: list}})
	}
}

func setPower(vm *simulator.VirtualMachine, state types.VirtualMachinePowerState) {
	update(vm, func() {
		vm.Runtime.PowerState = state
		vm.Summary.Runtime.PowerState = state
	}, []types.PropertyChange{
		{Name: "runtime.powerState", Val: state},
		{Name: "summary.runtime.powerState", Val: state},
	})
}

func setUUID(vm *simulator.VirtualMachine, id string) {
	update(vm, func() {
		vm.Config.Uuid = id
		vm.Summary.Config.Uuid = id
	}, []types.PropertyChange{
		{Name: "config.uuid", Val: id},
		{Name: "summary.config.uuid", Val: id},
	})
}

// otherHost returns a host (preferring the same cluster) that none of the given VMs runs on.
func otherHost(avoid ...*simulator.VirtualMachine) *simulator.HostSystem {
	used := map[string]bool{}
	var parent string
	for _, vm := range avoid {
		if h := hostOf(vm); h != nil {
			used[h.Self.Value] = true
			if parent == "" && h.Parent != nil {
				parent = h.Parent.Value
			}
		}
	}
	var fallback *simulator.HostSystem
	for _, h := range allHosts() {
		if used[h.Self.Value] {
			continue
		}
		if h.Parent != nil && h.Parent.Value == parent {
			return h
		}
		if fallback == nil {
			fallback = h
		}
	}
	return fallback
}

// makePairs turns n VMs into backups of n other VMs: same config.uuid, different hosts. With
// spread, pair i's primary runs on host i and its backup on host i+1 (modulo the number of hosts,
// in name order), so that each host runs as many primaries as backups and a host failure hits a
// known set of groups.
func (c *controller) makePairs(n int, spread bool) error {
	vms := allVMs()
	if n == 0 {
		return nil
	}
	hosts := allHosts()
	if len(hosts) < 2 {
		return fmt.Errorf("FT pairs need at least two hosts")
	}
	if 2*n > len(vms) {
		return fmt.Errorf("%d FT pairs need %d VMs, the inventory has %d", n, 2*n, len(vms))
	}
	// Spread pairs over the inventory: primary i, backup i+1 of every stride.
	stride := len(vms) / n
	for i := 0; i < n; i++ {
		primary, backup := vms[i*stride], vms[i*stride+1]
		if spread {
			for vm, h := range map[*simulator.VirtualMachine]*simulator.HostSystem{
				primary: hosts[i%len(hosts)], backup: hosts[(i+1)%len(hosts)]} {
				if hostOf(vm) != h {
					moveVM(vm, h)
				}
			}
		} else if h := hostOf(primary); h != nil && hostOf(backup) == h {
			moveVM(backup, otherHost(primary))
		}
		setUUID(backup, primary.Config.Uuid)
		ids := []string{primary.Config.InstanceUuid, backup.Config.InstanceUuid}
		running := types.VirtualMachineFaultToleranceStateRunning
		setFt(primary, 1, ids, running)
		setFt(backup, 2, ids, running)
		c.groups = append(c.groups, &ftGroup{UUID: primary.Config.Uuid, State: running,
			Instances: []*simulator.VirtualMachine{primary, backup}})
	}
	return nil
}

func (c *controller) group(key string) *ftGroup {
	for i, g := range c.groups {
		if key == g.UUID || key == fmt.Sprint(i) {
			return g
		}
		for _, vm := range g.Instances {
			if key == vm.Name || key == vm.Config.InstanceUuid {
				return g
			}
		}
	}
	return nil
}

// failover makes the first backup the primary. The failed primary is replaced at once by a new
// backup instance (new instanceUuid) on a host that runs no other instance, the group staying
// "running"; or, with later, it is lost: the group runs unprotected ("needSecondary") until
// addSecondary makes a new secondary.
func (c *controller) failover(g *ftGroup, target string, later bool) error {
	if len(g.Instances) < 2 {
		return fmt.Errorf("group %s has no backup", g.UUID)
	}
	if later {
		c.lose(g, g.Instances[0])
		return nil
	}
	old := g.Instances[0]
	rest := g.Instances[1:]
	var host *simulator.HostSystem
	if target != "" {
		host = findHost(target)
		if host == nil {
			return fmt.Errorf("no host %q", target)
		}
	} else {
		host = otherHost(g.Instances...)
	}
	if host == nil {
		return fmt.Errorf("no free host for a new backup")
	}
	newID := c.newInstanceID(old)
	g.Instances = append(append([]*simulator.VirtualMachine(nil), rest...), old)
	ids := make([]string, 0, len(g.Instances))
	for _, vm := range g.Instances[:len(g.Instances)-1] {
		ids = append(ids, vm.Config.InstanceUuid)
	}
	ids = append(ids, newID)
	oldHost := hostOf(old)
	// The group stays protected through an immediate failover: the state changes only if it was not running.
	stateChanged := g.State != types.VirtualMachineFaultToleranceStateRunning
	g.State = types.VirtualMachineFaultToleranceStateRunning
	// One update per VM, so a client sees each instance change as a whole.
	for i, vm := range g.Instances {
		vm := vm
		role := int32(i + 1)
		ft := append([]string(nil), ids...)
		changes := []types.PropertyChange{
			{Name: "config.ftInfo.role", Val: role},
			{Name: "config.ftInfo.instanceUuids", Val: ft},
		}
		if stateChanged {
			changes = append(changes, types.PropertyChange{Name: "runtime.faultToleranceState", Val: g.State})
		}
		ref := host.Self
		if vm == old {
			// The new backup instance takes over the VM object of the failed primary.
			changes = append(changes,
				types.PropertyChange{Name: "runtime.host", Val: ref},
				types.PropertyChange{Name: "summary.runtime.host", Val: ref},
				types.PropertyChange{Name: "config.instanceUuid", Val: newID},
				types.PropertyChange{Name: "summary.config.instanceUuid", Val: newID},
			)
		}
		update(vm, func() {
			vm.Config.FtInfo = &types.FaultToleranceConfigInfo{Role: role, InstanceUuids: ft}
			vm.Runtime.FaultToleranceState = g.State
			if vm == old {
				vm.Runtime.Host = &ref
				vm.Summary.Runtime.Host = &ref
				vm.Config.InstanceUuid = newID
				vm.Summary.Config.InstanceUuid = newID
			}
		}, changes)
	}
	relist(old, oldHost, host)
	return nil
}

func (c *controller) newInstanceID(vm *simulator.VirtualMachine) string {
	c.serial++
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprintf("%s/failover/%d", vm.Config.InstanceUuid, c.serial))).String()
}

// retag gives the group's instances their roles (in order, from 1), the group's instance UUIDs
// and its state, one update per VM.
func (g *ftGroup) retag() {
	ids := make([]string, 0, len(g.Instances))
	for _, vm := range g.Instances {
		ids = append(ids, vm.Config.InstanceUuid)
	}
	for i, vm := range g.Instances {
		setFt(vm, int32(i+1), ids, g.State)
	}
}

// lose takes one instance out of the group as a host failure would: the instance is gone, the
// first remaining one is primary, and the group needs a secondary.
func (c *controller) lose(g *ftGroup, vm *simulator.VirtualMachine) {
	var kept []*simulator.VirtualMachine
	for _, inst := range g.Instances {
		if inst != vm {
			kept = append(kept, inst)
		}
	}
	g.Instances = kept
	g.lost = append(g.lost, vm)
	hide(vm)
	g.State = types.VirtualMachineFaultToleranceStateNeedSecondary
	g.retag()
}

// addSecondary makes a new secondary for a group that lost one, on host target (default: a host
// running no instance of the group), reusing a lost instance's VM object with a new instanceUuid.
// The group's state becomes state (vSphere's "starting" while the secondary catches up).
func (c *controller) addSecondary(g *ftGroup, target string, state types.VirtualMachineFaultToleranceState) error {
	if len(g.lost) == 0 {
		return fmt.Errorf("group %s has lost no instance", g.UUID)
	}
	var host *simulator.HostSystem
	if target != "" {
		if host = findHost(target); host == nil {
			return fmt.Errorf("no host %q", target)
		}
	} else if host = otherHost(g.Instances...); host == nil {
		return fmt.Errorf("no free host for a new secondary")
	}
	vm := g.lost[0]
	g.lost = g.lost[1:]
	newID := c.newInstanceID(vm)
	ref := host.Self
	update(vm, func() {
		vm.Runtime.Host = &ref
		vm.Summary.Runtime.Host = &ref
		vm.Config.InstanceUuid = newID
		vm.Summary.Config.InstanceUuid = newID
	}, []types.PropertyChange{
		{Name: "runtime.host", Val: ref},
		{Name: "summary.runtime.host", Val: ref},
		{Name: "config.instanceUuid", Val: newID},
		{Name: "summary.config.instanceUuid", Val: newID},
	})
	relist(vm, nil, host)
	g.Instances = append(g.Instances, vm)
	g.State = state
	g.retag()
	return nil
}

// hostFail fails a host: every group with an instance there loses it (a primary there fails
// over to its first backup). It returns the UUIDs of the groups that now need a secondary.
func (c *controller) hostFail(host *simulator.HostSystem) []string {
	hit := []string{}
	for _, g := range c.groups {
		var lost []*simulator.VirtualMachine
		for _, vm := range g.Instances {
			if h := hostOf(vm); h != nil && h.Self == host.Self {
				lost = append(lost, vm)
			}
		}
		if len(lost) == 0 {
			continue
		}
		for _, vm := range lost {
			c.lose(g, vm)
		}
		hit = append(hit, g.UUID)
	}
	return hit
}

// ftOff turns FT off for a group: its secondaries are deleted, the primary stays as a plain VM.
func (c *controller) ftOff(g *ftGroup) {
	for _, vm := range append(g.Instances[1:], g.lost...) {
		destroy(vm)
	}
	clearFt(g.Instances[0])
	c.forget(g)
}

// removeSecondaries deletes a group's secondaries: the primary runs on alone, needing one.
func (c *controller) removeSecondaries(g *ftGroup) {
	for _, vm := range g.Instances[1:] {
		destroy(vm)
	}
	g.Instances = g.Instances[:1]
	g.State = types.VirtualMachineFaultToleranceStateNeedSecondary
	g.retag()
}

// destroyGroup deletes an FT VM: every instance.
func (c *controller) destroyGroup(g *ftGroup) {
	for _, vm := range append(g.Instances, g.lost...) {
		destroy(vm)
	}
	c.forget(g)
}

func (c *controller) forget(g *ftGroup) {
	var kept []*ftGroup
	for _, other := range c.groups {
		if other != g {
			kept = append(kept, other)
		}
	}
	c.groups = kept
}

// expireSessions ends every current SDK session through the SessionManager's own
// TerminateSession, as a vCenter administrator (or session expiry) would: clients keep
// their cookie, and their next call is answered with a NotAuthenticated fault. It returns
// the keys of the sessions it ended.
//
// SessionManager opts out of the registry's object lock (it embeds nopLocker), so
// Map.WithLock cannot keep a request in flight from mapping its cookie (getSession) and
// then putting the session back (SetSession) just after it was deleted. Instead the ended
// sessions are looked for again a few times and ended again if one came back; sessions
// that log in afterwards are left alone.
func expireSessions() ([]string, error) {
	sm := simulator.Map.SessionManager()
	// TerminateSession refuses to end the caller's own session; the control endpoint's
	// caller has none, so it gets a throwaway one that is never registered.
	self := &simulator.Session{
		UserSession: types.UserSession{Key: "ftvcsim-control-" + uuid.New().String()},
		Registry:    simulator.NewRegistry(),
	}
	ctx := &simulator.Context{Session: self, Map: simulator.Map}
	current := func() []string {
		// A session's view of the SessionManager lists every current session.
		var keys []string
		if view, ok := self.Get(sm.Self).(*simulator.SessionManager); ok {
			for _, s := range view.SessionList {
				keys = append(keys, s.Key)
			}
		}
		return keys
	}
	terminate := func(keys []string) error {
		for _, k := range keys {
			res := sm.TerminateSession(ctx, &types.TerminateSession{This: sm.Self, SessionId: []string{k}})
			if f := res.Fault(); f != nil {
				if _, loggedOut := f.VimFault().(*types.NotFound); loggedOut {
					continue // logged out meanwhile
				}
				return fmt.Errorf("TerminateSession: %T %s", f.VimFault(), f.String)
			}
		}
		return nil
	}
	ended := current()
	if err := terminate(ended); err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	for _, k := range ended {
		gone[k] = true
	}
	for pass := 0; pass < 3; pass++ {
		time.Sleep(20 * time.Millisecond)
		var back []string
		for _, k := range current() {
			if gone[k] {
				back = append(back, k)
			}
		}
		if err := terminate(back); err != nil {
			return nil, err
		}
	}
	sort.Strings(ended)
	return ended, nil
}

func (c *controller) state(all bool) map[string]interface{} {
	var groups []map[string]interface{}
	for _, g := range c.groups {
		var inst []vmState
		for _, vm := range g.Instances {
			inst = append(inst, describeVM(vm))
		}
		groups = append(groups, map[string]interface{}{"uuid": g.UUID, "instances": inst, "state": g.State,
			"lost": len(g.lost)})
	}
	out := map[string]interface{}{"ft": groups}
	if all {
		var vms []vmState
		for _, vm := range allVMs() {
			vms = append(vms, describeVM(vm))
		}
		var hosts []hostState
		for _, h := range allHosts() {
			hosts = append(hosts, hostState{Name: h.Name, Moref: h.Self.Value, UUID: h.Hardware.SystemInfo.Uuid})
		}
		out["vms"] = vms
		out["hosts"] = hosts
	}
	return out
}

func knownFtState(s types.VirtualMachineFaultToleranceState) bool {
	switch s {
	case types.VirtualMachineFaultToleranceStateNotConfigured, types.VirtualMachineFaultToleranceStateDisabled,
		types.VirtualMachineFaultToleranceStateEnabled, types.VirtualMachineFaultToleranceStateNeedSecondary,
		types.VirtualMachineFaultToleranceStateStarting, types.VirtualMachineFaultToleranceStateRunning:
		return true
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (c *controller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := r.URL.Query()
	fail := func(code int, format string, args ...interface{}) {
		writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
	}
	if r.Method == http.MethodGet && r.URL.Path == "/state" {
		writeJSON(w, http.StatusOK, c.state(q.Get("all") != ""))
		return
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "use GET /state or POST /failover, /secondary, /secondary/remove, "+
			"/ftstate, /ft/off, /destroy, /host/fail, /power, /move, /sessions/expire")
		return
	}
	groupArg := func() *ftGroup {
		g := c.group(q.Get("group"))
		if g == nil {
			fail(http.StatusNotFound, "no FT group %q", q.Get("group"))
		}
		return g
	}
	switch r.URL.Path {
	case "/failover":
		g := groupArg()
		if g == nil {
			return
		}
		if err := c.failover(g, q.Get("host"), q.Get("secondary") == "later"); err != nil {
			fail(http.StatusConflict, "%v", err)
			return
		}
	case "/secondary":
		state := types.VirtualMachineFaultToleranceState(q.Get("state"))
		if state == "" {
			state = types.VirtualMachineFaultToleranceStateStarting
		}
		if !knownFtState(state) {
			fail(http.StatusBadRequest, "bad FT state %q", state)
			return
		}
		if q.Get("group") == "*" {
			// Every group that lost an instance gets its secondary back.
			for _, g := range c.groups {
				for len(g.lost) > 0 {
					if err := c.addSecondary(g, "", state); err != nil {
						fail(http.StatusConflict, "%v", err)
						return
					}
				}
			}
			break
		}
		g := groupArg()
		if g == nil {
			return
		}
		if err := c.addSecondary(g, q.Get("host"), state); err != nil {
			fail(http.StatusConflict, "%v", err)
			return
		}
	case "/ftstate":
		g := groupArg()
		if g == nil {
			return
		}
		state := types.VirtualMachineFaultToleranceState(q.Get("state"))
		if !knownFtState(state) {
			fail(http.StatusBadRequest, "bad FT state %q", state)
			return
		}
		g.State = state
		g.retag()
	case "/secondary/remove":
		g := groupArg()
		if g == nil {
			return
		}
		c.removeSecondaries(g)
	case "/ft/off":
		g := groupArg()
		if g == nil {
			return
		}
		c.ftOff(g)
	case "/destroy":
		if q.Get("vm") != "" && c.group(q.Get("vm")) == nil {
			vm := findVM(q.Get("vm"))
			if vm == nil {
				fail(http.StatusNotFound, "no VM %q", q.Get("vm"))
				return
			}
			destroy(vm)
			break
		}
		key := q.Get("group")
		if key == "" {
			key = q.Get("vm")
		}
		g := c.group(key)
		if g == nil {
			fail(http.StatusNotFound, "no FT group or VM %q", key)
			return
		}
		c.destroyGroup(g)
	case "/host/fail":
		host := findHost(q.Get("host"))
		if host == nil {
			fail(http.StatusNotFound, "no host %q", q.Get("host"))
			return
		}
		hit := c.hostFail(host)
		writeJSON(w, http.StatusOK, map[string]interface{}{"needSecondary": hit})
		return
	case "/power":
		vm := findVM(q.Get("vm"))
		if vm == nil {
			fail(http.StatusNotFound, "no VM %q", q.Get("vm"))
			return
		}
		state := types.VirtualMachinePowerState(q.Get("state"))
		switch state {
		case types.VirtualMachinePowerStatePoweredOn, types.VirtualMachinePowerStatePoweredOff,
			types.VirtualMachinePowerStateSuspended:
		default:
			fail(http.StatusBadRequest, "bad power state %q", state)
			return
		}
		setPower(vm, state)
	case "/sessions/expire":
		keys, err := expireSessions()
		if err != nil {
			fail(http.StatusInternalServerError, "%v", err)
			return
		}
		if keys == nil {
			keys = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]interface{}{"expired": keys})
		return
	case "/move":
		vm, host := findVM(q.Get("vm")), findHost(q.Get("host"))
		if vm == nil || host == nil {
			fail(http.StatusNotFound, "no VM %q or host %q", q.Get("vm"), q.Get("host"))
			return
		}
		moveVM(vm, host)
	default:
		fail(http.StatusNotFound, "unknown path %s", r.URL.Path)
		return
	}
	writeJSON(w, http.StatusOK, c.state(false))
}

// personalise gives every host its own DNS host name (vcsim's template says "localhost") and
// every VM vSphere's FT state of a VM outside FT, which govmomi leaves empty.
func personalise() {
	for _, vm := range allVMs() {
		vm.Runtime.FaultToleranceState = types.VirtualMachineFaultToleranceStateNotConfigured
		vm.Summary.Runtime.FaultToleranceState = types.VirtualMachineFaultToleranceStateNotConfigured
	}
	for _, h := range allHosts() {
		if h.Config == nil || h.Config.Network == nil || h.Config.Network.DnsConfig == nil {
			continue
		}
		dns := *h.Config.Network.DnsConfig.GetHostDnsConfig()
		dns.HostName = strings.ToLower(h.Name)
		dns.DomainName = "vcsim.test"
		h.Config.Network.DnsConfig = &dns
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "SDK listen address (host:port)")
	controlListen := flag.String("control", "127.0.0.1:0", "control endpoint listen address (loopback only)")
	certFile := flag.String("cert", "", "TLS certificate (PEM) for the SDK endpoint, chain allowed")
	keyFile := flag.String("key", "", "TLS private key (PEM)")
	username := flag.String("username", "user", "login user name")
	password := flag.String("password", "pass", "login password")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 0, "standalone hosts per datacenter")
	vms := flag.Int("vm", 4, "VMs per cluster (resource pool) and per standalone host")
	pairs := flag.Int("ft", 1, "number of FT pairs to form from the VMs")
	spread := flag.Bool("ft-spread", false, "place pair i's primary on host i and its backup on host i+1 (hosts in name order)")
	readyFile := flag.String("ready-file", "", "write the ready JSON line to this file too")
	idle := flag.Duration("session-idle", 0, "expire sessions idle this long (0: never)")
	verbose := flag.Bool("verbose", false, "keep the simulator's request log on stderr")
	plain := flag.Bool("plain-http", false, "serve the SDK over plain HTTP (no -cert/-key): for testing http:// clients")
	flag.Parse()

	if !*verbose {
		log.SetOutput(io.Discard)
	}
	var tlsConfig *tls.Config
	if !*plain {
		if *certFile == "" || *keyFile == "" {
			fmt.Fprintln(os.Stderr, "ftvcsim: -cert and -key are required (or -plain-http)")
			os.Exit(2)
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ftvcsim: loading certificate: %v\n", err)
			os.Exit(2)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	simulator.SessionIdleTimeout = *idle

	model := simulator.VPX()
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	model.Host = *standalone
	model.Machine = *vms
	model.Portgroup = 0
	defer model.Remove()
	start := time.Now()
	if err := model.Create(); err != nil {
		fmt.Fprintf(os.Stderr, "ftvcsim: creating the inventory: %v\n", err)
		os.Exit(1)
	}
	personalise()
	// Every session's root PropertyCollector, and every collector created from it, is then
	// an incrementalCollector (collector.go).
	root := newCollector()
	root.Self = simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance).Content.PropertyCollector
	simulator.Map.Put(root)
	ctl := &controller{}
	if err := ctl.makePairs(*pairs, *spread); err != nil {
		fmt.Fprintf(os.Stderr, "ftvcsim: %v\n", err)
		os.Exit(2)
	}

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	model.Service.TLS = tlsConfig
	server := model.Service.NewServer()
	defer server.Close()

	ln, err := net.Listen("tcp", *controlListen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ftvcsim: control listener: %v\n", err)
		os.Exit(1)
	}
	go func() { _ = http.Serve(ln, ctl) }()

	sdk := *server.URL
	sdk.User = nil
	ready, _ := json.Marshal(map[string]interface{}{
		"url":     sdk.String(),
		"control": "http://" + ln.Addr().String(),
		"pid":     os.Getpid(),
		"seconds": time.Since(start).Seconds(),
	})
	if *readyFile != "" {
		if err := writeFileAtomic(*readyFile, append(ready, '\n')); err != nil {
			fmt.Fprintf(os.Stderr, "ftvcsim: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Println(string(ready))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
