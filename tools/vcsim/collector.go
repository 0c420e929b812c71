package main

// This file holds incrementalCollector, a PropertyCollector that computes WaitForUpdatesEx
// answers from the changes themselves instead of re-collecting whole filters.
//
// Why: govmomi 0.24.2's PropertyCollector.WaitForUpdatesEx runs a full collect of every
// filter (for ftreport: a ContainerView over every VM, host and cluster) once for each queued
// Enter or Modify, only to find objects the client has not seen yet. With 45,000 VMs that is
// about a second per update, and an FT failover queues several, so a client waited 3-4 s for
// it. A vCenter answers incrementally; so does this type:
//
//   - a Modify of an object the filter already reported is answered from its own ChangeSet,
//     matched against the filter's PropertySpecs exactly as govmomi's PropertyFilter.apply
//     does (same names, values, and parent-path rewriting);
//   - objects the filter has not reported yet are looked for only when the batch creates an
//     object or changes a property the filter traverses, with one traversal of its ObjectSpecs
//     that reads no property, and only those new objects are collected. (An object that
//     becomes reachable without any announced change -- govmomi moves some references
//     silently -- is found at the next such batch; govmomi's found it at the next change of
//     anything.)
//   - Leave updates of reported objects pass through.
//
// The update contents are those govmomi's collector would send; govmomi 0.24.2 ignores
// WaitOptions.maxObjectUpdates (it never truncates), and so does this type.
//
// govmomi supports such wrappers: requests are dispatched by method name (reflect
// MethodByName), and each session's instance of the root PropertyCollector is created from
// the registered object's type, which main() replaces with this one. Everything not defined
// here (CreateFilter, RetrievePropertiesEx, ...) is govmomi's own.

import (
	"context"
	"path"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// pendingCheck: every this many updates queued for a collector nobody drains, check that its
// session still exists (see feed).
const pendingCheck = 20000

type objectSet = map[types.ManagedObjectReference]struct{}

type incrementalCollector struct {
	simulator.PropertyCollector // by value: sessions create theirs with reflect.New

	mu      sync.Mutex
	pending []types.ObjectUpdate // changes since the last WaitForUpdatesEx batch, in order
	cancel  context.CancelFunc
	feed    *feed // set by the first WaitForUpdatesEx
	// reported holds, per filter, the objects the client has been sent (govmomi keeps the
	// same in PropertyFilter.refs, which it updates only in its own WaitForUpdatesEx).
	reported map[types.ManagedObjectReference]objectSet
}

func newCollector() *incrementalCollector {
	c := &incrementalCollector{}
	c.Self.Type = "PropertyCollector" // else the registry would name the type after the Go type
	return c
}

func (pc *incrementalCollector) CreatePropertyCollector(ctx *simulator.Context, _ *types.CreatePropertyCollector) soap.HasFault {
	ref := ctx.Session.Put(newCollector()).Reference()
	return &methods.CreatePropertyCollectorBody{Res: &types.CreatePropertyCollectorResponse{Returnval: ref}}
}

// CancelWaitForUpdates and DestroyPropertyCollector are redefined because govmomi's cancel
// the wait it started itself, not ours.
func (pc *incrementalCollector) CancelWaitForUpdates(_ *types.CancelWaitForUpdates) soap.HasFault {
	pc.mu.Lock()
	if pc.cancel != nil {
		pc.cancel()
	}
	pc.mu.Unlock()
	return &methods.CancelWaitForUpdatesBody{Res: new(types.CancelWaitForUpdatesResponse)}
}

func (pc *incrementalCollector) DestroyPropertyCollector(ctx *simulator.Context, c *types.DestroyPropertyCollector) soap.HasFault {
	pc.CancelWaitForUpdates(nil)
	pc.mu.Lock()
	f := pc.feed
	pc.mu.Unlock()
	if f != nil {
		f.stop()
	}
	return pc.PropertyCollector.DestroyPropertyCollector(ctx, c)
}

// feed passes the registry's change notifications (simulator.RegisterObject) to one
// collector. It is registered instead of the collector because the registry keys handlers by
// reference, and every session's instance of the root PropertyCollector has the same one: with
// govmomi's collectors, only the session that waited last got updates from the root collector.
//
// A session that ends (logout, expiry, termination) without destroying its collectors would
// leave their feeds registered, queueing updates nobody reads. So feeds of ended sessions are
// dropped whenever a client starts watching, and when one's queue grows long.
type feed struct {
	pc    *incrementalCollector
	ref   types.ManagedObjectReference
	owner *simulator.Session
}

var feeds = struct {
	sync.Mutex
	all map[*feed]bool
}{all: map[*feed]bool{}}

func (f *feed) Reference() types.ManagedObjectReference { return f.ref }

func (f *feed) PutObject(o mo.Reference) {
	f.queue(types.ObjectUpdate{Obj: o.Reference(), Kind: types.ObjectUpdateKindEnter})
}

func (f *feed) UpdateObject(o mo.Reference, changes []types.PropertyChange) {
	f.queue(types.ObjectUpdate{Obj: o.Reference(), Kind: types.ObjectUpdateKindModify, ChangeSet: changes})
}

func (f *feed) RemoveObject(ref types.ManagedObjectReference) {
	f.queue(types.ObjectUpdate{Obj: ref, Kind: types.ObjectUpdateKindLeave})
}

func (f *feed) queue(u types.ObjectUpdate) {
	f.pc.mu.Lock()
	f.pc.pending = append(f.pc.pending, u)
	n := len(f.pc.pending)
	f.pc.mu.Unlock()
	if n%pendingCheck == 0 && !sessionKeys(f.owner)[f.owner.Key] {
		f.stop()
	}
}

func (f *feed) stop() {
	simulator.Map.RemoveHandler(f)
	feeds.Lock()
	delete(feeds.all, f)
	feeds.Unlock()
	f.pc.mu.Lock()
	f.pc.pending = nil
	f.pc.mu.Unlock()
}

// watch registers the collector's feed (once) and drops the feeds of ended sessions.
func (pc *incrementalCollector) watch(ctx *simulator.Context) {
	live := sessionKeys(ctx.Session)
	feeds.Lock()
	var ended []*feed
	for f := range feeds.all {
		if !live[f.owner.Key] {
			ended = append(ended, f)
		}
	}
	feeds.Unlock()
	for _, f := range ended {
		f.stop()
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.feed != nil {
		return
	}
	pc.feed = &feed{pc: pc, owner: ctx.Session,
		ref: types.ManagedObjectReference{Type: "ftvcsimFeed", Value: uuid.New().String()}}
	feeds.Lock()
	feeds.all[pc.feed] = true
	feeds.Unlock()
	simulator.Map.AddHandler(pc.feed)
}

// sessionKeys returns the keys of the current sessions, as listed by a session's view of the
// SessionManager (any session's, even an ended one's).
func sessionKeys(s *simulator.Session) map[string]bool {
	keys := map[string]bool{}
	if sm, ok := s.Get(simulator.Map.SessionManager().Self).(*simulator.SessionManager); ok {
		for _, us := range sm.SessionList {
			keys[us.Key] = true
		}
	}
	return keys
}

// WaitForUpdates is deprecated but pyvmomi still offers it; govmomi's would call its own
// WaitForUpdatesEx.
func (pc *incrementalCollector) WaitForUpdates(ctx *simulator.Context, r *types.WaitForUpdates) soap.HasFault {
	body := &methods.WaitForUpdatesBody{}
	res := pc.WaitForUpdatesEx(ctx, &types.WaitForUpdatesEx{This: r.This, Version: r.Version})
	if f := res.Fault(); f != nil {
		body.Fault_ = f
	} else {
		body.Res = &types.WaitForUpdatesResponse{Returnval: *res.(*methods.WaitForUpdatesExBody).Res.Returnval}
	}
	return body
}

// WaitForUpdatesEx keeps the protocol of govmomi's: an empty version returns every object
// of every filter and version "-"; later calls wait, gathering changes every 250 ms, until
// some filter has an update, MaxWaitSeconds passes (nil result) or the wait is cancelled.
func (pc *incrementalCollector) WaitForUpdatesEx(ctx *simulator.Context, r *types.WaitForUpdatesEx) soap.HasFault {
	oneUpdate := false
	timeout := time.Duration(0)
	if r.Options != nil && r.Options.MaxWaitSeconds != nil {
		oneUpdate = *r.Options.MaxWaitSeconds == 0
		timeout = time.Second * time.Duration(*r.Options.MaxWaitSeconds)
	}
	wait, cancel := context.WithCancel(context.Background())
	if timeout > 0 {
		cancel()
		wait, cancel = context.WithTimeout(context.Background(), timeout)
	}
	defer cancel()
	pc.mu.Lock()
	pc.cancel = cancel
	pc.mu.Unlock()

	set := &types.UpdateSet{Version: r.Version}
	body := &methods.WaitForUpdatesExBody{Res: &types.WaitForUpdatesExResponse{Returnval: set}}
	fail := func(fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault("", fault)
		body.Res = nil
		return body
	}

	if r.Version == "" {
		// Registered before collecting, so that no change made meanwhile is lost.
		pc.watch(ctx)
		if fault := pc.enter(ctx, set); fault != nil {
			return fail(fault)
		}
		set.Version = "-"
		return body
	}

	ticker := time.NewTicker(250 * time.Millisecond) // lets the updates of one change gather
	defer ticker.Stop()
	for {
		select {
		case <-wait.Done():
			if wait.Err() == context.Canceled {
				return fail(new(types.RequestCanceled))
			}
			body.Res.Returnval = nil
			return body
		case <-ticker.C:
		}
		pc.mu.Lock()
		updates := pc.pending
		pc.pending = nil
		pc.mu.Unlock()
		if len(updates) != 0 {
			if fault := pc.changes(ctx, updates, set); fault != nil {
				return fail(fault)
			}
			if len(set.FilterSet) != 0 {
				return body
			}
		}
		if oneUpdate {
			body.Res.Returnval = nil
			return body
		}
	}
}

// changes turns queued updates into the update set, in the order govmomi's collector does:
// new objects (Enter) of every filter first, then per filter the updates that concern it.
func (pc *incrementalCollector) changes(ctx *simulator.Context, updates []types.ObjectUpdate, set *types.UpdateSet) types.BaseMethodFault {
	if pc.mayReachNew(ctx, updates) {
		if fault := pc.enter(ctx, set); fault != nil {
			return fault
		}
	}
	for _, ref := range pc.Filter {
		filter, ok := ctx.Session.Get(ref).(*simulator.PropertyFilter)
		if !ok {
			continue
		}
		seen := pc.reported[ref] // read only: a filter not collected yet has none
		fu := types.PropertyFilterUpdate{Filter: ref}
		for _, u := range updates {
			if _, known := seen[u.Obj]; !known {
				continue
			}
			switch u.Kind {
			case types.ObjectUpdateKindModify:
				if cs := matching(ctx, filter, u.Obj, u.ChangeSet); len(cs) != 0 {
					fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Obj: u.Obj, Kind: u.Kind, ChangeSet: cs})
				}
			case types.ObjectUpdateKindLeave:
				delete(seen, u.Obj)
				fu.ObjectSet = append(fu.ObjectSet, u)
			}
		}
		if len(fu.ObjectSet) != 0 {
			set.FilterSet = append(set.FilterSet, fu)
		}
	}
	// Forget the objects of destroyed filters.
	live := map[types.ManagedObjectReference]bool{}
	for _, ref := range pc.Filter {
		live[ref] = true
	}
	for ref := range pc.reported {
		if !live[ref] {
			delete(pc.reported, ref)
		}
	}
	return nil
}

// mayReachNew tells whether a batch can have made objects reachable that a filter has not
// reported. govmomi re-collects every filter for each Enter or Modify to find them; but only a
// creation, a change of a property the filters traverse (a ContainerView's "view", a folder's
// "childEntity"...), or a filter not collected yet can bring any. So the look is taken only
// then, and once for the whole batch (the inventory is the same for all of it).
func (pc *incrementalCollector) mayReachNew(ctx *simulator.Context, updates []types.ObjectUpdate) bool {
	uncollected := false
	var paths []string
	for _, ref := range pc.Filter {
		if _, collected := pc.reported[ref]; !collected {
			uncollected = true
		}
		if filter, ok := ctx.Session.Get(ref).(*simulator.PropertyFilter); ok {
			for _, o := range filter.Spec.ObjectSet {
				paths = traversed(o.SelectSet, paths)
			}
		}
	}
	for _, u := range updates {
		switch u.Kind {
		case types.ObjectUpdateKindEnter:
			return true
		case types.ObjectUpdateKindModify:
			if uncollected {
				return true
			}
			for _, c := range u.ChangeSet {
				for _, p := range paths {
					if strings.HasPrefix(c.Name, p) || strings.HasPrefix(p, c.Name) {
						return true
					}
				}
			}
		}
	}
	return false
}

// traversed appends the paths of every TraversalSpec in specs (named SelectionSpecs refer to
// TraversalSpecs defined elsewhere in the same tree).
func traversed(specs []types.BaseSelectionSpec, paths []string) []string {
	for _, s := range specs {
		if ts, ok := s.(*types.TraversalSpec); ok {
			paths = traversed(ts.SelectSet, append(paths, ts.Path))
		}
	}
	return paths
}

func (pc *incrementalCollector) seen(filter types.ManagedObjectReference) objectSet {
	if pc.reported == nil {
		pc.reported = map[types.ManagedObjectReference]objectSet{}
	}
	s := pc.reported[filter]
	if s == nil {
		s = objectSet{}
		pc.reported[filter] = s
	}
	return s
}

// retrieve runs govmomi's RetrievePropertiesEx, returning its fault as a bare method fault.
func (pc *incrementalCollector) retrieve(ctx *simulator.Context, spec types.PropertyFilterSpec) (*types.RetrieveResult, types.BaseMethodFault) {
	res := pc.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{This: pc.Self, SpecSet: []types.PropertyFilterSpec{spec}})
	if f := res.Fault(); f != nil {
		if mf, ok := f.VimFault().(types.BaseMethodFault); ok {
			return nil, mf
		}
		return nil, &types.SystemError{Reason: f.String}
	}
	return res.(*methods.RetrievePropertiesExBody).Res.Returnval, nil
}

// enter adds, for every filter, an Enter update for each object it reaches and has not
// reported yet, with the filter's properties of that object.
func (pc *incrementalCollector) enter(ctx *simulator.Context, set *types.UpdateSet) types.BaseMethodFault {
	for _, ref := range pc.Filter {
		filter, ok := ctx.Session.Get(ref).(*simulator.PropertyFilter)
		if !ok {
			continue
		}
		seen := pc.seen(ref)
		spec := filter.Spec
		if len(seen) != 0 {
			// Which objects does the filter reach? Its own traversal, reading no property.
			reach := spec
			reach.PropSet = nil
			for _, p := range spec.PropSet {
				reach.PropSet = append(reach.PropSet, types.PropertySpec{Type: p.Type})
			}
			res, fault := pc.retrieve(ctx, reach)
			if fault != nil {
				return fault
			}
			var fresh []types.ObjectSpec
			for _, o := range res.Objects {
				if _, ok := seen[o.Obj]; !ok {
					fresh = append(fresh, types.ObjectSpec{Obj: o.Obj})
				}
			}
			if len(fresh) == 0 {
				continue
			}
			spec = types.PropertyFilterSpec{PropSet: spec.PropSet, ObjectSet: fresh,
				ReportMissingObjectsInResults: types.NewBool(true)} // one may have gone meanwhile
		}
		res, fault := pc.retrieve(ctx, spec)
		if fault != nil {
			return fault
		}
		fu := types.PropertyFilterUpdate{Filter: ref}
		for _, o := range res.Objects {
			if _, ok := seen[o.Obj]; ok {
				continue
			}
			seen[o.Obj] = struct{}{}
			fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{
				Obj: o.Obj, Kind: types.ObjectUpdateKindEnter, ChangeSet: entered(ctx, filter.Spec.PropSet, o),
			})
		}
		if len(fu.ObjectSet) != 0 {
			set.FilterSet = append(set.FilterSet, fu)
		}
	}
	return nil
}

// entered lists an object's properties as govmomi's collector does in an Enter update: every
// requested path in the order asked, with a nil value for an empty one. RetrievePropertiesEx
// leaves those out, so they are put back. (With PropertySpec.all, whose empty fields cannot be
// told from the result, the result is used as it is.)
func entered(ctx *simulator.Context, specs []types.PropertySpec, o types.ObjectContent) []types.PropertyChange {
	var out []types.PropertyChange
	matched := matchingSpecs(ctx, specs, o.Obj)
	for _, p := range matched {
		if isTrue(p.All) {
			for _, dp := range o.PropSet {
				out = append(out, types.PropertyChange{Op: types.PropertyChangeOpAssign, Name: dp.Name, Val: dp.Val})
			}
			return out
		}
	}
	got := map[string]interface{}{}
	for _, dp := range o.PropSet {
		got[dp.Name] = dp.Val
	}
	done := map[string]bool{}
	for _, m := range o.MissingSet {
		done[m.Path] = true // invalid paths are reported in missingSet, not as changes
	}
	for _, p := range matched {
		for _, name := range p.PathSet {
			if !done[name] {
				done[name] = true
				out = append(out, types.PropertyChange{Op: types.PropertyChangeOpAssign, Name: name, Val: got[name]})
			}
		}
	}
	return out
}

// matching keeps the changes a filter asks for, as govmomi's PropertyFilter.apply: a change
// named by one of the paths passes as it is; a change below a requested path (the path is a
// prefix of its name) is reported once as that path with the object's current value.
func matching(ctx *simulator.Context, filter *simulator.PropertyFilter, ref types.ManagedObjectReference, changes []types.PropertyChange) []types.PropertyChange {
	specs := matchingSpecs(ctx, filter.Spec.PropSet, ref)
	var out []types.PropertyChange
	parents := map[string]bool{}
	for _, c := range changes {
		name, ok := matchName(specs, c.Name)
		if !ok {
			continue
		}
		if name != c.Name && ctx.Map.Get(ref) != nil {
			if parents[name] {
				continue
			}
			parents[name] = true
			c = types.PropertyChange{Op: c.Op, Name: name, Val: currentValue(ctx, ref, name)}
		}
		out = append(out, c)
	}
	return out
}

func matchName(specs []types.PropertySpec, change string) (string, bool) {
	for _, p := range specs {
		if isTrue(p.All) {
			return change, true
		}
		for _, name := range p.PathSet {
			// A plain string prefix, not a path one, as govmomi's (so "config" matches
			// "configStatus"): the aim is the same answers.
			if name == change || strings.HasPrefix(change, name) {
				return name, true
			}
		}
	}
	return "", false
}

func currentValue(ctx *simulator.Context, ref types.ManagedObjectReference, name string) interface{} {
	// Any collector's RetrievePropertiesEx reads the same registry: the caller's object is
	// not needed, so a zero collector does.
	var pc simulator.PropertyCollector
	res := pc.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{SpecSet: []types.PropertyFilterSpec{{
		ObjectSet: []types.ObjectSpec{{Obj: ref}},
		PropSet:   []types.PropertySpec{{Type: ref.Type, PathSet: []string{name}}},
	}}})
	if res.Fault() != nil {
		return nil
	}
	for _, o := range res.(*methods.RetrievePropertiesExBody).Res.Returnval.Objects {
		for _, dp := range o.PropSet {
			if dp.Name == name {
				return dp.Val
			}
		}
	}
	return nil // empty or missing field, as govmomi reports it
}

// matchingSpecs returns the PropertySpecs that apply to an object: those of its type, or of
// a type it embeds (ManagedEntity, ComputeResource, ...), the rule of govmomi's collector.
func matchingSpecs(ctx *simulator.Context, specs []types.PropertySpec, ref types.ManagedObjectReference) []types.PropertySpec {
	var kind reflect.Type
	var out []types.PropertySpec
	for _, p := range specs {
		if p.Type != ref.Type {
			if kind == nil {
				obj := ctx.Map.Get(ref)
				if obj == nil {
					continue
				}
				kind = moType(obj)
			}
			if f, ok := kind.FieldByName(p.Type); !(ok && f.Anonymous) && p.Type != kind.Name() {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// moType is the vim25/mo type a simulator object embeds as its first field.
func moType(obj mo.Reference) reflect.Type {
	t := reflect.TypeOf(obj).Elem()
	for path.Base(t.PkgPath()) != "mo" && t.Kind() == reflect.Struct && t.NumField() != 0 {
		t = t.Field(0).Type
	}
	return t
}

func isTrue(b *bool) bool { return b != nil && *b }
