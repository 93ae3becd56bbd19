package events

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// subscriberBuffer is how many events a subscriber may lag behind before
// further events are dropped for it.
const subscriberBuffer = 64

// scriptMaxOutput bounds the output kept from a Shoal script action.
const scriptMaxOutput = 8 * 1024

// ErrClosed is returned by Reconfigure after Close.
var ErrClosed = errors.New("events dispatcher closed")

// Dispatcher receives events, keeps the recent ones, fans them out to
// subscribers and runs the configured actions and serf handlers.
//
// Publish, HandleSerf, Recent, Subscribe, SetSelfTags and Stats never block
// on actions and are safe for concurrent use.
type Dispatcher struct {
	self   string
	log    zerolog.Logger
	ctx    context.Context // ends at Close: cancels every running action
	cancel context.CancelFunc
	client *http.Client
	sem    atomic.Pointer[chan struct{}] // MaxConcurrent slots
	wg     sync.WaitGroup                // runner goroutines

	// Test hooks, set before the first Publish: extra TLS roots for SMTP
	// STARTTLS and the webhook backoff base.
	tlsRoots    *x509.CertPool
	backoffBase time.Duration

	running, waiting atomic.Int64

	mu        sync.Mutex // guards everything below
	closed    bool
	cfg       Config
	runners   []*runner
	recent    []Event // ring buffer of cfg.RecentSize
	recentPos int     // next write position
	recentLen int
	subs      map[int]chan Event
	nextSub   int
	selfTags  map[string]string
	published uint64
	subDrops  uint64

	statsMu sync.Mutex
	stats   map[string]*ActionStats
}

// Stats are counters and gauges for metrics and the status page.
type Stats struct {
	Published       uint64                 // events accepted by Publish
	SubscriberDrops uint64                 // events not delivered to a slow subscriber
	Running         int                    // actions running now
	Waiting         int                    // actions waiting for a MaxConcurrent slot
	Actions         map[string]ActionStats // by action name; serf handlers as "serf_handlers[i]"
}

// ActionStats are one action's counters. They survive Reconfigure.
type ActionStats struct {
	Type        string    // log | script | email | webhook | serf
	Runs        uint64    // runs finished (a mail sent or failed counts one run)
	Failed      uint64    // runs that failed, timeouts included
	TimedOut    uint64    // runs cut off by their timeout (scripts killed)
	Dropped     uint64    // events dropped: queue full, batch limit, or pending at shutdown
	RateLimited uint64    // email: times a due batch was held back by max_per_hour
	LastError   string    // the last failure, "" after a success
	LastRun     time.Time // when the last run finished
}

// New validates cfg and starts a dispatcher for the node named self.
func New(cfg Config, self string, logger zerolog.Logger) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new events dispatcher: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		self:        self,
		log:         logger.With().Str("component", "events").Logger(),
		ctx:         ctx,
		cancel:      cancel,
		client:      newWebhookClient(),
		backoffBase: webhookBackoffBase,
		subs:        map[int]chan Event{},
		stats:       map[string]*ActionStats{},
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyLocked(cfg.withDefaults())
	return d, nil
}

// Reconfigure replaces the actions, serf handlers and limits. Actions and
// handlers whose configuration is unchanged keep their queue and state (an
// email's pending batch and rate limit); removed or changed ones finish their
// current run and drop what they had queued. While a MaxConcurrent change
// takes effect, runs started under the old limit may overlap new ones.
func (d *Dispatcher) Reconfigure(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("reconfigure events: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("reconfigure events: %w", ErrClosed)
	}
	d.applyLocked(cfg.withDefaults())
	return nil
}

func (d *Dispatcher) applyLocked(cfg Config) {
	if cur := d.sem.Load(); cur == nil || cap(*cur) != cfg.MaxConcurrent {
		sem := make(chan struct{}, cfg.MaxConcurrent)
		d.sem.Store(&sem)
	}
	if d.recent == nil || len(d.recent) != cfg.RecentSize {
		old := d.recentLocked(0)
		d.recent = make([]Event, cfg.RecentSize)
		d.recentPos, d.recentLen = 0, 0
		for _, e := range old[max(0, len(old)-cfg.RecentSize):] {
			d.pushRecentLocked(e)
		}
	}
	oldRunners := map[string]*runner{}
	for _, r := range d.runners {
		oldRunners[r.name] = r
	}
	var next []*runner
	take := func(r *runner) {
		if old, ok := oldRunners[r.name]; ok && old.sameAs(r) {
			delete(oldRunners, r.name)
			next = append(next, old)
			return
		}
		d.startRunner(r)
		next = append(next, r)
	}
	for _, a := range cfg.Actions {
		take(&runner{name: a.Name, kind: string(a.Type), action: a})
	}
	for i, s := range cfg.SerfHandlers {
		h, _ := ParseSerfHandler(s) // validated
		take(&runner{name: fmt.Sprintf("serf_handlers[%d]", i), kind: "serf", handler: h, action: ActionConfig{Timeout: cfg.DefaultTimeout}})
	}
	for _, r := range oldRunners {
		close(r.quit)
	}
	d.runners = next
	d.cfg = cfg
}

func (d *Dispatcher) startRunner(r *runner) {
	r.d = d
	r.wake = make(chan struct{}, 1)
	r.quit = make(chan struct{})
	if r.kind == string(ActionEmail) {
		r.limiter = &hourLimiter{max: r.action.MaxPerHour}
	}
	d.statsMu.Lock()
	if d.stats[r.name] == nil {
		d.stats[r.name] = &ActionStats{}
	}
	d.stats[r.name].Type = r.kind
	d.statsMu.Unlock()
	d.wg.Add(1)
	if r.kind == string(ActionEmail) {
		go r.emailLoop()
	} else {
		go r.loop()
	}
}

// Publish records ev and queues it for matching actions. It never blocks:
// an action whose queue is full loses its oldest pending event (counted in
// ActionStats.Dropped). Zero Time, empty Node and empty Severity are filled
// in with now, the local node and DefaultSeverity; Time is kept in UTC.
// Publish after Close does nothing.
func (d *Dispatcher) Publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	if ev.Node == "" {
		ev.Node = d.self
	}
	if ev.Severity == "" {
		ev.Severity = DefaultSeverity(ev.Type)
	}
	ev.Details = maps.Clone(ev.Details)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.published++
	d.pushRecentLocked(ev)
	for _, ch := range d.subs {
		select {
		case ch <- ev:
		default:
			d.subDrops++
		}
	}
	for _, r := range d.runners {
		if r.wants(ev) {
			r.push(job{ev: ev}, d.cfg.QueueSize)
		}
	}
	d.log.Debug().Str("type", string(ev.Type)).Str("member", ev.Member).Str("group", ev.Group).Str("ip", ev.IP).Msg("event")
}

// HandleSerf queues e for the serf handlers whose filters match it, once per
// matching filter as serf's agent does. Like Publish it never blocks.
func (d *Dispatcher) HandleSerf(e SerfEvent) {
	e.Payload = slices.Clone(e.Payload)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	tags := maps.Clone(d.selfTags)
	for _, r := range d.runners {
		if r.kind != "serf" {
			continue
		}
		for range r.handler.Matches(e) {
			r.push(job{serf: &e, selfTags: tags}, d.cfg.QueueSize)
		}
	}
}

// SetSelfTags sets the local node's serf tags, which serf handlers see as
// SERF_SELF_ROLE and SERF_TAG_*.
func (d *Dispatcher) SetSelfTags(tags map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.selfTags = maps.Clone(tags)
}

// Recent returns up to n of the most recent events, oldest first; n <= 0
// returns all that are kept (Config.RecentSize).
func (d *Dispatcher) Recent(n int) []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.recentLocked(n)
}

func (d *Dispatcher) recentLocked(n int) []Event {
	if n <= 0 || n > d.recentLen {
		n = d.recentLen
	}
	out := make([]Event, 0, n)
	if n == 0 {
		return out
	}
	oldest := (d.recentPos - d.recentLen + len(d.recent)) % len(d.recent)
	for i := d.recentLen - n; i < d.recentLen; i++ {
		out = append(out, d.recent[(oldest+i)%len(d.recent)])
	}
	return out
}

func (d *Dispatcher) pushRecentLocked(e Event) {
	d.recent[d.recentPos] = e
	d.recentPos = (d.recentPos + 1) % len(d.recent)
	if d.recentLen < len(d.recent) {
		d.recentLen++
	}
}

// Subscribe returns a channel of events published from now on and a cancel
// function that closes it. A subscriber more than 64 events behind misses
// events (counted in Stats.SubscriberDrops); it never slows Publish. The
// channel is closed by cancel or Close.
func (d *Dispatcher) Subscribe() (<-chan Event, func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := make(chan Event, subscriberBuffer)
	if d.closed {
		close(ch)
		return ch, func() {}
	}
	id := d.nextSub
	d.nextSub++
	d.subs[id] = ch
	return ch, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if c, ok := d.subs[id]; ok {
			delete(d.subs, id)
			close(c)
		}
	}
}

// Stats returns a snapshot of the counters.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	s := Stats{Published: d.published, SubscriberDrops: d.subDrops}
	d.mu.Unlock()
	s.Running = int(d.running.Load())
	s.Waiting = int(d.waiting.Load())
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	s.Actions = make(map[string]ActionStats, len(d.stats))
	for k, v := range d.stats {
		s.Actions[k] = *v
	}
	return s
}

// Close stops every action: running scripts are killed, webhook retries and
// mails in progress are abandoned, and pending events (including unsent
// email batches) are dropped and counted. Subscriber channels are closed.
// Close waits for the runner goroutines and is idempotent.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	runners := d.runners
	d.runners = nil
	for id, ch := range d.subs {
		delete(d.subs, id)
		close(ch)
	}
	d.mu.Unlock()
	d.cancel()
	for _, r := range runners {
		close(r.quit)
	}
	d.wg.Wait()
}

// job is one queued unit of work for a runner.
type job struct {
	ev       Event
	serf     *SerfEvent
	selfTags map[string]string // serf: the local tags when the event arrived
	mail     *mailMessage      // email: a batch due for sending
}

// runner runs one action's (or serf handler's) queue, in order, one run at a
// time.
type runner struct {
	d       *Dispatcher
	name    string
	kind    string // an ActionType or "serf"
	action  ActionConfig
	handler SerfHandler // serf

	wake chan struct{} // a job was queued (capacity 1)
	quit chan struct{} // closed to stop

	mu    sync.Mutex
	queue []job

	// email state, owned by emailLoop
	limiter *hourLimiter
	batch   []Event
	omitted int
}

func (r *runner) sameAs(o *runner) bool {
	return r.kind == o.kind && reflect.DeepEqual(r.action, o.action) && reflect.DeepEqual(r.handler, o.handler)
}

// wants reports whether this action's filters select ev.
func (r *runner) wants(ev Event) bool {
	if r.kind == "serf" {
		return false
	}
	if len(r.action.Events) > 0 && !slices.Contains(r.action.Events, ev.Type) {
		return false
	}
	if len(r.action.Groups) > 0 && !slices.Contains(r.action.Groups, ev.Group) {
		return false
	}
	return true
}

// push queues j without blocking, dropping the oldest job when limit are
// already queued.
func (r *runner) push(j job, limit int) {
	r.mu.Lock()
	if len(r.queue) >= limit {
		r.queue = r.queue[1:]
		r.d.count(r.name, func(s *ActionStats) { s.Dropped++ })
	}
	r.queue = append(r.queue, j)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *runner) popAll() []job {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue
	r.queue = nil
	return q
}

func (r *runner) pop() (job, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return job{}, false
	}
	j := r.queue[0]
	r.queue[0] = job{}
	r.queue = r.queue[1:]
	return j, true
}

func (r *runner) dropPending(extra int) {
	n := len(r.popAll()) + extra
	if n > 0 {
		r.d.count(r.name, func(s *ActionStats) { s.Dropped += uint64(n) })
		r.d.log.Warn().Str("action", r.name).Int("dropped", n).Msg("action stopped with events pending")
	}
}

// loop runs the queue of a log, script, webhook or serf runner.
func (r *runner) loop() {
	defer r.d.wg.Done()
	for {
		select {
		case <-r.quit:
			r.dropPending(0)
			return
		default:
		}
		j, ok := r.pop()
		if !ok {
			select {
			case <-r.wake:
			case <-r.quit:
			}
			continue
		}
		r.d.run(r, j)
	}
}

// emailLoop collects events into a batch that is sent BatchWindow after its
// first event, or later when MaxPerHour mails went out in the last hour.
func (r *runner) emailLoop() {
	defer r.d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var due <-chan time.Time // nil while no batch is pending
	for {
		select {
		case <-r.quit:
			timer.Stop()
			r.dropPending(len(r.batch))
			return
		case <-r.wake:
			for _, j := range r.popAll() {
				r.batch = append(r.batch, j.ev)
			}
			if over := len(r.batch) - maxBatch; over > 0 {
				r.batch = slices.Delete(r.batch, 0, over)
				r.omitted += over
				r.d.count(r.name, func(s *ActionStats) { s.Dropped += uint64(over) })
			}
			if due == nil && len(r.batch) > 0 {
				timer.Reset(r.action.BatchWindow)
				due = timer.C
			}
		case <-due:
			due = nil
			now := time.Now()
			if at := r.limiter.next(now); at.After(now) {
				r.d.count(r.name, func(s *ActionStats) { s.RateLimited++ })
				r.d.log.Warn().Str("action", r.name).Int("pending", len(r.batch)).Time("until", at).
					Msg("email rate limit reached, holding batch")
				timer.Reset(at.Sub(now))
				due = timer.C
				continue
			}
			r.limiter.record(now)
			msg := &mailMessage{From: r.action.From, To: r.action.To, Node: r.d.self, Events: r.batch, Omitted: r.omitted, Date: now}
			r.batch, r.omitted = nil, 0
			r.d.run(r, job{mail: msg})
		}
	}
}

// run waits for a concurrency slot, runs j and records the outcome.
func (d *Dispatcher) run(r *runner, j job) {
	sem := *d.sem.Load()
	d.waiting.Add(1)
	select {
	case sem <- struct{}{}:
		d.waiting.Add(-1)
	case <-d.ctx.Done():
		d.waiting.Add(-1)
		d.count(r.name, func(s *ActionStats) { s.Dropped++ })
		return
	}
	d.running.Add(1)
	start := time.Now()
	err := r.execute(d.ctx, j)
	d.running.Add(-1)
	<-sem
	timedOut := errors.Is(err, context.DeadlineExceeded)
	d.count(r.name, func(s *ActionStats) {
		s.Runs++
		s.LastRun = time.Now()
		s.LastError = ""
		if err != nil {
			s.Failed++
			s.LastError = err.Error()
		}
		if timedOut {
			s.TimedOut++
		}
	})
	if err != nil {
		d.log.Warn().Err(err).Str("action", r.name).Str("action_type", r.kind).Bool("timed_out", timedOut).
			Dur("took", time.Since(start)).Msg("action failed")
	}
}

func (d *Dispatcher) count(name string, f func(*ActionStats)) {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	s := d.stats[name]
	if s == nil {
		s = &ActionStats{}
		d.stats[name] = s
	}
	f(s)
}

// execute performs one run of r for j.
func (r *runner) execute(ctx context.Context, j job) error {
	a := r.action
	switch r.kind {
	case string(ActionLog):
		r.logEvent(j.ev)
		return nil
	case string(ActionScript):
		stdin, err := json.Marshal(j.ev)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		ctx, cancel := context.WithTimeout(ctx, a.Timeout)
		defer cancel()
		res, err := runScript(ctx, a.Command, ShoalEnv(j.ev, r.name), append(stdin, '\n'), scriptMaxOutput)
		r.logOutput(res, err)
		return err
	case string(ActionWebhook):
		body, err := json.Marshal(j.ev)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		return postWebhook(ctx, r.d.client, a, j.ev.Type, body, r.d.backoffBase)
	case string(ActionEmail):
		msg := j.mail.Bytes()
		return retry(ctx, a.Retries, r.d.backoffBase, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, a.Timeout)
			defer cancel()
			return sendMail(ctx, a, r.d.tlsRoots, msg)
		})
	case "serf":
		e := j.serf
		ctx, cancel := context.WithTimeout(ctx, a.Timeout)
		defer cancel()
		res, err := runScript(ctx, r.handler.Script, SerfEnv(*e, r.d.self, j.selfTags), SerfStdin(*e), serfMaxOutput)
		r.logOutput(res, err)
		if err != nil {
			return err
		}
		if e.Kind == SerfQuery && res.Written > 0 && e.Respond != nil {
			if err := e.Respond(res.Output); err != nil {
				return fmt.Errorf("respond to query %q: %w", e.QueryName, err)
			}
		}
		return nil
	}
	return fmt.Errorf("run action %s: unknown type %q", r.name, r.kind)
}

func (r *runner) logOutput(res scriptResult, err error) {
	l := r.d.log.Debug()
	if err != nil {
		l = r.d.log.Warn()
	}
	if res.Written > int64(len(res.Output)) {
		l = l.Int64("output_bytes", res.Written)
	}
	l.Str("action", r.name).Bytes("output", res.Output).Msg("script finished")
}

// logEvent is the log action: one structured line, its level from the
// event's severity.
func (r *runner) logEvent(e Event) {
	var l *zerolog.Event
	switch e.Severity {
	case SeverityCritical:
		l = r.d.log.Error()
	case SeverityWarning:
		l = r.d.log.Warn()
	default:
		l = r.d.log.Info()
	}
	l = l.Str("action", r.name).Time("event_time", e.Time).Str("type", string(e.Type)).Str("node", e.Node).
		Str("severity", string(e.Severity))
	if e.Member != "" {
		l = l.Str("member", e.Member)
	}
	if e.Group != "" {
		l = l.Str("group", e.Group)
	}
	if e.IP != "" {
		l = l.Str("ip", e.IP)
	}
	if len(e.Details) > 0 {
		l = l.Interface("details", e.Details)
	}
	l.Msg(string(e.Type))
}
