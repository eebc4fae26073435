// SPDX-License-Identifier: MIT
// runtime/trace.cpp -- trace export: Chrome trace-event JSON.
//
// Recording.  Each worker owns a ring of fixed-size events (trace_ring): only
// the thread running as that worker writes it, without a lock or an atomic;
// once full, the oldest events are overwritten and counted as dropped.  Texts
// (a task's name, a cancel reason) go to a second ring of strings beside it,
// which reuses its strings' storage once warm.  Threads that are not workers
// of the runtime (a thread that spawns or cancels, the timer thread firing a
// timeout) write to one more ring under a mutex.
//
// Writing.  trace_finish runs after the runtime stopped: no worker writes any
// more, and the workers' last writes happened before their threads were
// joined (or, for a simulation or a driven runtime, on the thread that stops
// it or under the drive lock it held), so the rings are read without any
// synchronisation of their own.  The events of all rings are sorted by time,
// flows are paired (below), and the JSON is written.
//
// Flows.  A spawn records a flow start ("s") with the task's address as its
// key; the worker loop that runs the task first records the flow's finish
// ("f").  A task that never runs from a worker loop (an awaiting task took
// it back and ran it inline, or it was cancelled before a worker saw it) has
// no finish, and an address is reused once its task is freed: so trace_finish
// pairs each finish with the latest start of the same key before it, renumbers
// the pairs, and leaves out starts and finishes without a partner (also those
// whose partner a ring overwrote).  A steal records its start (on the
// victim's track) and finish (on the thief's) together, with a key of their
// own.
#include "trace.hpp"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "weft/errors.hpp"

namespace weft::detail {

namespace {

enum class ev : std::uint8_t {
  slice,           // X: a resume segment (arg: duration)
  foreign_spawn,   // X of no length: a spawn from a thread that is not a worker
  spawn_start,     // s: a spawn (arg: the task's address)
  spawn_finish,    // f: the task's first run from a worker loop (arg: as above)
  steal_start,     // s: on the victim's track (arg: the steal's key)
  steal_finish,    // f: on the thief's track (arg: as above)
  cancel_request,  // i: a cancel() of a task (text: reason; site: the call)
  cancel_delivery  // i: a task took a request at a resume point
};

struct trace_event {
  std::uint64_t ts = 0;
  std::uint64_t arg = 0;
  // 1 + index in the ring's text ring, or 0: a task's name (slices, spawns)
  // or a cancel's reason.
  std::uint64_t text = 0;
  std::uint64_t task_text = 0;      // cancels: the task's name
  const char* file = nullptr;       // a spawn site, or a cancel's call site (static)
  const char* task_file = nullptr;  // cancels: the task's spawn site
  std::uint32_t line = 0;
  std::uint32_t task_line = 0;
  std::uint32_t tid = 0;
  std::uint16_t extra = 0;  // slice: 1 + victim when stolen; cancels: cancel_kind
  ev type = ev::slice;
  bool flag = false;  // slice: the task's first run; slice: cancelled before it started
};
static_assert(sizeof(trace_event) == 64, "trace_options documents 112 bytes per slot");

// A task's name, or null for none.  A name is fixed at spawn (task_extras).
const std::string* name_of(const task_core* c) noexcept {
  // Acquire: pairs with watch_list's release CAS (as task_name()).
  const task_extras* x = c->extras.load(std::memory_order_acquire);
  return x != nullptr && !x->name.empty() ? &x->name : nullptr;
}

}  // namespace

struct trace_ring {
  std::vector<trace_event> events;
  std::uint64_t count = 0;  // events ever pushed; the last `capacity` are kept
  std::vector<std::string> texts;
  std::uint64_t text_count = 0;
  std::uint32_t tid = 0;        // the track (workers only)
  std::uint32_t steal_seq = 0;  // keys of this worker's steals
  // A worker's spawns, apart from its events: most tasks a worker spawns are
  // taken back and run inline by the task that awaits them, so their flow
  // has no finish; kept with the events, they would push out the slices.
  struct spawn_mark {
    std::uint64_t ts;
    std::uintptr_t task;
  };
  std::vector<spawn_mark> spawns;
  std::uint64_t spawn_count = 0;

  static_assert(sizeof(spawn_mark) + sizeof(std::string) <= 48,
                "trace_options documents at most 112 bytes per slot");

  explicit trace_ring(std::size_t capacity) : events(capacity), texts(capacity), spawns(capacity) {}

  void push_spawn(std::uint64_t ts, const task_core* c) noexcept {
    spawns[spawn_count % spawns.size()] = {ts, reinterpret_cast<std::uintptr_t>(c)};
    ++spawn_count;
  }

  void push(const trace_event& e) noexcept {
    events[count % events.size()] = e;
    ++count;
  }
  std::uint64_t put_text(std::string_view s) noexcept {
    // The same text as the last one (a named task resumed again): shared.
    if (text_count > 0 && texts[(text_count - 1) % texts.size()] == s) return text_count;
    try {
      texts[text_count % texts.size()].assign(s);
    } catch (...) {
      return 0;  // out of memory: the event goes without its text
    }
    return ++text_count;
  }
  // The text `ref` names, or null when it was overwritten.
  const std::string* text(std::uint64_t ref) const noexcept {
    if (ref == 0 || text_count - (ref - 1) > texts.size()) return nullptr;
    return &texts[(ref - 1) % texts.size()];
  }
  std::uint64_t dropped() const noexcept {
    return count > events.size() ? count - events.size() : 0;
  }
};

struct trace_state {
  std::FILE* file = nullptr;
  std::string path;
  bool virtual_clock = false;
  std::vector<std::unique_ptr<trace_ring>> rings;  // one per worker, tracks 1..N
  std::mutex mutex;
  // Guarded by `mutex`: the other threads' ring and their tracks (worker
  // count + 1 + index), and whether the file was written.
  trace_ring foreign;
  std::vector<std::pair<std::thread::id, std::string>> threads;
  bool written = false;

  explicit trace_state(std::size_t capacity) : foreign(capacity) {}
  ~trace_state() {
    if (file != nullptr) std::fclose(file);
  }
};

void trace_state_deleter::operator()(trace_state* s) const noexcept { delete s; }

namespace {

thread_local const char* tls_thread_name = nullptr;

std::uint32_t foreign_tid_of(trace_state& st, std::size_t workers) {
  const std::thread::id me = std::this_thread::get_id();
  for (std::size_t i = 0; i < st.threads.size(); ++i) {
    if (st.threads[i].first == me) return static_cast<std::uint32_t>(workers + 1 + i);
  }
  std::string name;
  if (tls_thread_name != nullptr) {
    name = tls_thread_name;
  } else {
    char buf[64] = {};
    if (pthread_getname_np(pthread_self(), buf, sizeof buf) == 0 && buf[0] != '\0') name = buf;
    name += " (thread " + std::to_string(st.threads.size() + 1) + ")";
  }
  st.threads.emplace_back(me, std::move(name));
  return static_cast<std::uint32_t>(workers + st.threads.size());
}

// The ring of the calling thread when it is one of `rt`'s workers, else null.
trace_ring* own_ring(const runtime_impl* rt) noexcept {
  worker* w = tls_worker;
  return w != nullptr && w->rt == rt ? w->trace : nullptr;
}

// Record `e` (its tid filled in here) with its texts, on the calling thread's
// ring: a worker's own, or the shared one under its mutex.
void record(runtime_impl* rt, trace_event e, const std::string* text,
            const std::string* task_text) noexcept {
  trace_state& st = *rt->trace;
  auto put = [&](trace_ring& r, trace_event x) {
    if (text != nullptr) x.text = r.put_text(*text);
    if (task_text != nullptr) x.task_text = r.put_text(*task_text);
    r.push(x);
  };
  if (trace_ring* r = own_ring(rt)) {
    e.tid = r->tid;
    put(*r, e);
    return;
  }
  try {
    std::lock_guard lk(st.mutex);
    e.tid = foreign_tid_of(st, rt->worker_count);
    if (e.type == ev::spawn_start) {
      // A thread without slices: a mark for the flow to start from.
      trace_event mark = e;
      mark.type = ev::foreign_spawn;
      put(st.foreign, mark);
    }
    put(st.foreign, e);
  } catch (...) {
    // Out of memory for the thread's name: the event is left out.
  }
}

}  // namespace

void trace_name_thread(const char* name) noexcept { tls_thread_name = name; }

void trace_spawn(runtime_impl* rt, worker_hot* w, task_core* core) noexcept {
  if (w != nullptr && w->rt == rt) {
    w->trace->push_spawn(now_ns(), core);
    return;
  }
  trace_event e;
  e.type = ev::spawn_start;
  e.ts = now_ns();
  e.arg = reinterpret_cast<std::uintptr_t>(core);
  e.file = core->where.file_name();
  e.line = core->where.line();
  record(rt, e, name_of(core), nullptr);
}

bool trace_run(runtime_impl* rt, worker* w, const runtime_impl::found_work& f) {
  trace_ring& r = *w->trace;
  task_core* const c = f.task;
  // What names the slice is read now: the task may be freed by the end.
  const task_core* const o = owner_of_item(c);
  trace_event e;
  e.type = ev::slice;
  e.tid = r.tid;
  e.file = o->where.file_name();
  e.line = o->where.line();
  if (const std::string* name = name_of(o)) e.text = r.put_text(*name);
  e.flag = !is_fork_item(c) && !c->started;
  const std::uint64_t t0 = now_ns();
  if (f.stolen()) {
    const std::uint32_t victim = f.from - runtime_impl::found_work::kVictim;
    e.extra = static_cast<std::uint16_t>(std::min<std::uint32_t>(victim + 1, 0xffff));
    trace_event s;
    s.type = ev::steal_start;
    s.ts = t0;
    s.arg = (std::uint64_t{r.tid} << 32) | r.steal_seq++;
    s.tid = victim + 1;
    r.push(s);
    s.type = ev::steal_finish;
    s.tid = r.tid;
    r.push(s);
  }
  if (e.flag) {
    trace_event fin;
    fin.type = ev::spawn_finish;
    fin.ts = t0;
    fin.arg = reinterpret_cast<std::uintptr_t>(c);
    fin.tid = r.tid;
    r.push(fin);
  }
  const bool ran = rt->run(w, c);
  e.ts = t0;
  e.arg = now_ns() - t0;
  if (!ran) e.flag = false;
  r.push(e);
  return ran;
}

namespace {
void record_cancel(ev type, task_core* core, const cancel_request* r) noexcept {
  trace_event e;
  e.type = type;
  e.ts = now_ns();
  e.file = r->where.file_name();
  e.line = r->where.line();
  e.task_file = core->where.file_name();
  e.task_line = core->where.line();
  e.extra = static_cast<std::uint16_t>(r->kind);
  record(core->rt, e, r->reason.empty() ? nullptr : &r->reason, name_of(core));
}
}  // namespace

void trace_cancel_request(task_core* core, const cancel_request* r) noexcept {
  record_cancel(ev::cancel_request, core, r);
}

void trace_delivery(task_core* core, const cancel_request* r) noexcept {
  record_cancel(ev::cancel_delivery, core, r);
}

// ---------------------------------------------------------------------------

void trace_setup(runtime_impl* rt) {
  std::string path;
  std::size_t capacity = trace_options::default_ring_capacity;
  const char* from = "runtime_options::trace";
  if (rt->options.trace) {
    path = rt->options.trace->path;
    if (rt->options.trace->ring_capacity != 0) capacity = rt->options.trace->ring_capacity;
    if (path.empty()) return;
  } else if (const char* env = std::getenv("WEFT_TRACE")) {
    from = "WEFT_TRACE";
    path = env;
    if (path.empty()) {
      std::fputs("weft: ignoring WEFT_TRACE=\"\" (want the path of a file to write the trace to)\n",
                 stderr);
      return;
    }
  } else {
    return;
  }
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    std::fprintf(stderr, "weft: not tracing: cannot write %s=\"%s\": %s\n", from, path.c_str(),
                 std::strerror(errno));
    return;
  }
  try {
    auto st = std::unique_ptr<trace_state, trace_state_deleter>(new trace_state(capacity));
    st->file = file;
    file = nullptr;
    st->path = std::move(path);
    st->virtual_clock = rt->options.simulation.has_value();
    for (unsigned i = 0; i < rt->worker_count; ++i) {
      st->rings.push_back(std::make_unique<trace_ring>(capacity));
      st->rings.back()->tid = i + 1;
    }
    for (unsigned i = 0; i < rt->worker_count; ++i) rt->workers[i]->trace = st->rings[i].get();
    rt->trace = std::move(st);
  } catch (const std::bad_alloc&) {
    if (file != nullptr) std::fclose(file);
    std::fprintf(stderr,
                 "weft: not tracing: no memory for %u ring(s) of %zu events (%s ring_capacity)\n",
                 rt->worker_count, capacity, from);
    for (auto& w : rt->workers) w->trace = nullptr;
  }
}

namespace {

// An event as written: which ring it came from, for its texts.
struct out_event {
  const trace_event* e;
  const trace_ring* ring;
  std::uint64_t seq;  // order within its ring
};

int phase_rank(ev t) noexcept {
  // At one timestamp: a foreign spawn's mark, then a flow's start, then
  // slices and instants, then a flow's finish (a flow binds to the slice that
  // encloses it, which must have begun).
  switch (t) {
    case ev::foreign_spawn:
      return 0;
    case ev::spawn_start:
    case ev::steal_start:
      return 1;
    case ev::spawn_finish:
    case ev::steal_finish:
      return 3;
    default:
      return 2;
  }
}

void put_escaped(std::string& out, std::string_view s) {
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
}

std::string_view base_name(const char* file) noexcept {
  std::string_view f = file != nullptr ? file : "";
  const std::size_t slash = f.rfind('/');
  return slash == std::string_view::npos ? f : f.substr(slash + 1);
}

// `ns` as microseconds with three decimals (the format's unit).
void put_us(std::string& out, std::uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llu.%03llu", static_cast<unsigned long long>(ns / 1000),
                static_cast<unsigned long long>(ns % 1000));
  out += buf;
}

void put_site(std::string& out, const char* file, std::uint32_t line) {
  put_escaped(out, file != nullptr ? file : "");
  out += ':';
  out += std::to_string(line);
}

// A task's label: its name, else the base name and line of its spawn site.
void put_task_label(std::string& out, const std::string* name, const char* file,
                    std::uint32_t line) {
  if (name != nullptr) {
    put_escaped(out, *name);
  } else {
    put_escaped(out, base_name(file));
    out += ':';
    out += std::to_string(line);
  }
}

std::string render(trace_state& st, unsigned workers) {
  std::vector<const trace_ring*> rings;
  rings.reserve(st.rings.size() + 1);
  for (auto& r : st.rings) rings.push_back(r.get());
  rings.push_back(&st.foreign);
  // The workers' spawn marks as flow starts (stable storage: reserved).
  std::vector<trace_event> marks;
  std::size_t n_marks = 0;
  for (const trace_ring* r : rings)
    n_marks += std::min<std::uint64_t>(r->spawn_count, r->spawns.size());
  marks.reserve(n_marks);
  std::vector<out_event> evs;
  for (const trace_ring* r : rings) {
    const std::uint64_t first =
        r->spawn_count > r->spawns.size() ? r->spawn_count - r->spawns.size() : 0;
    for (std::uint64_t i = first; i < r->spawn_count; ++i) {
      const trace_ring::spawn_mark& m = r->spawns[i % r->spawns.size()];
      trace_event e;
      e.type = ev::spawn_start;
      e.ts = m.ts;
      e.arg = m.task;
      e.tid = r->tid;
      marks.push_back(e);
      evs.push_back({&marks.back(), r, 0});
    }
  }
  std::uint64_t dropped = 0;
  for (const trace_ring* r : rings) {
    dropped += r->dropped();
    for (std::uint64_t i = r->dropped(); i < r->count; ++i) {
      evs.push_back({&r->events[i % r->events.size()], r, i});
    }
  }
  std::uint64_t base = ~std::uint64_t{0};
  for (const out_event& o : evs) base = std::min(base, o.e->ts);
  std::stable_sort(evs.begin(), evs.end(), [](const out_event& a, const out_event& b) {
    if (a.e->ts != b.e->ts) return a.e->ts < b.e->ts;
    return phase_rank(a.e->type) < phase_rank(b.e->type);
  });
  // Pair flows (file comment, "Flows"): ids[i] is the flow id of event i,
  // 0 for a flow event left out.
  std::vector<std::uint64_t> ids(evs.size(), 0);
  {
    std::unordered_map<std::uint64_t, std::size_t> open_spawn, open_steal;
    std::uint64_t next = 1;
    for (std::size_t i = 0; i < evs.size(); ++i) {
      const trace_event& e = *evs[i].e;
      const bool spawn = e.type == ev::spawn_start || e.type == ev::spawn_finish;
      if (!spawn && e.type != ev::steal_start && e.type != ev::steal_finish) continue;
      auto& open = spawn ? open_spawn : open_steal;
      if (e.type == ev::spawn_start || e.type == ev::steal_start) {
        open[e.arg] = i;  // replaces a start that never finished
      } else if (auto it = open.find(e.arg); it != open.end()) {
        ids[it->second] = ids[i] = next++;
        open.erase(it);
      }
    }
  }
  std::string out;
  out.reserve(evs.size() * 160 + 4096);
  out += "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"producer\":\"weft\",\"clock\":\"";
  out += st.virtual_clock ? "virtual (simulation)" : "steady";
  out += "\",\"ring_capacity\":";
  out += std::to_string(st.foreign.events.size());
  out += ",\"dropped_events\":";
  out += std::to_string(dropped);
  out += "},\n\"traceEvents\":[\n";
  out += R"({"ph":"M","pid":1,"name":"process_name","args":{"name":"weft"}})";
  auto thread_meta = [&](std::uint32_t tid, std::string_view name, std::uint64_t lost) {
    out += ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":" + std::to_string(tid) +
           ",\"name\":\"thread_name\",\"args\":{\"name\":\"";
    put_escaped(out, name);
    out += "\"}}";
    out += ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":" + std::to_string(tid) +
           ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":" + std::to_string(tid) + "}}";
    if (lost > 0) {
      out += ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":" + std::to_string(tid) +
             ",\"name\":\"weft_dropped_events\",\"args\":{\"dropped\":" + std::to_string(lost) +
             "}}";
    }
  };
  for (unsigned i = 0; i < workers; ++i) {
    thread_meta(i + 1, "weft-w" + std::to_string(i), st.rings[i]->dropped());
  }
  for (std::size_t i = 0; i < st.threads.size(); ++i) {
    thread_meta(static_cast<std::uint32_t>(workers + 1 + i), st.threads[i].second,
                i == 0 ? st.foreign.dropped() : 0);
  }
  for (std::size_t i = 0; i < evs.size(); ++i) {
    const trace_event& e = *evs[i].e;
    const trace_ring& r = *evs[i].ring;
    const bool is_flow = e.type == ev::spawn_start || e.type == ev::spawn_finish ||
                         e.type == ev::steal_start || e.type == ev::steal_finish;
    if (is_flow && ids[i] == 0) continue;
    out += ",\n{\"pid\":1,\"tid\":" + std::to_string(e.tid) + ",\"ts\":";
    put_us(out, e.ts - base);
    switch (e.type) {
      case ev::slice:
      case ev::foreign_spawn:
        out += ",\"ph\":\"X\",\"dur\":";
        put_us(out, e.type == ev::slice ? e.arg : 0);
        out += ",\"cat\":\"";
        out += e.type == ev::slice ? "task" : "spawn";
        out += "\",\"name\":\"";
        if (e.type == ev::foreign_spawn) out += "spawn ";
        put_task_label(out, r.text(e.text), e.file, e.line);
        out += "\",\"args\":{\"site\":\"";
        put_site(out, e.file, e.line);
        out += "\"";
        if (e.type == ev::slice && e.flag) out += ",\"first_run\":true";
        if (e.type == ev::slice && e.extra != 0) {
          out += ",\"stolen_from\":\"weft-w" + std::to_string(e.extra - 1) + "\"";
        }
        out += "}}";
        break;
      case ev::spawn_start:
      case ev::spawn_finish:
      case ev::steal_start:
      case ev::steal_finish: {
        const bool start = e.type == ev::spawn_start || e.type == ev::steal_start;
        const bool spawn = e.type == ev::spawn_start || e.type == ev::spawn_finish;
        out += start ? ",\"ph\":\"s\"" : ",\"ph\":\"f\",\"bp\":\"e\"";
        out += spawn ? ",\"cat\":\"spawn\",\"name\":\"spawn\""
                     : ",\"cat\":\"steal\",\"name\":\"steal\"";
        out += ",\"id\":" + std::to_string(ids[i]) + "}";
        break;
      }
      case ev::cancel_request:
      case ev::cancel_delivery: {
        out += ",\"ph\":\"i\",\"s\":\"t\",\"cat\":\"cancel\",\"name\":\"";
        out += e.type == ev::cancel_request ? "cancel request" : "cancel delivered";
        out += "\",\"args\":{\"reason\":\"";
        if (const std::string* t = r.text(e.text)) put_escaped(out, *t);
        out += "\",\"kind\":\"";
        put_escaped(out, to_string(static_cast<cancel_kind>(e.extra)));
        out += "\",\"where\":\"";
        put_site(out, e.file, e.line);
        out += "\",\"task\":\"";
        put_task_label(out, r.text(e.task_text), e.task_file, e.task_line);
        out += "\",\"task_site\":\"";
        put_site(out, e.task_file, e.task_line);
        out += "\"}}";
        break;
      }
    }
  }
  out += "\n]}\n";
  return out;
}

}  // namespace

void trace_finish(runtime_impl* rt) noexcept {
  if (rt->trace == nullptr) return;
  trace_state& st = *rt->trace;
  std::lock_guard lk(st.mutex);
  if (st.written) return;
  st.written = true;
  try {
    const std::string text = render(st, rt->worker_count);
    const bool ok = std::fwrite(text.data(), 1, text.size(), st.file) == text.size();
    const bool closed = std::fclose(st.file) == 0;
    st.file = nullptr;
    if (!ok || !closed) {
      std::fprintf(stderr, "weft: could not write the trace to \"%s\": %s\n", st.path.c_str(),
                   std::strerror(errno));
    }
  } catch (...) {
    std::fprintf(stderr, "weft: no memory to write the trace to \"%s\"\n", st.path.c_str());
  }
}

}  // namespace weft::detail
