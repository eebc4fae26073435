// SPDX-License-Identifier: MIT
// runtime/dump.cpp -- runtime::dump(), the task registry (track_tasks), the
// watchdog, and WEFT_DUMP_ON.  Protocols by name in docs/architecture.md,
// "Task dump and watchdog".
//
// What may be read of a task, and why it is safe:
//   - a running task: only the pointer (worker::running_task, compared) and
//     its spawn site (worker::running_site, static data); it may finish and
//     be freed at any moment;
//   - a task in the injection queue, the timer heap or the blocked list:
//     anything immutable (site, name) while that list's lock is held: a
//     queued task cannot run, a sleeping or blocked one cannot resume, before
//     it leaves the list under that lock;
//   - a tracked task: anything immutable while its registry's lock is held:
//     it leaves the registry (count_finish) before it is marked done, so
//     before anything can free it; its hook (what it waits for) under its
//     hook lock, which keeps the wait node or the awaited task alive.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dump_impl.hpp"
#include "sim_driver.hpp"
#include "spin.hpp"

namespace weft::detail {

namespace {

// Adds the tasks awaiting `c` (a task suspended in a wait that the caller's
// lock keeps it in: it cannot finish, so whoever awaits it cannot resume and
// is alive): its inline joiner, or the joiner registered on it (kJoiner), and
// so on up the chain.
void add_awaiting(std::vector<found_task>& out, task_core* c) {
  for (int depth = 0; depth < 1000 && c != nullptr; ++depth) {
    task_core* joiner = c->inline_joiner;
    // Acquire: pairs with join_slow's acq_rel fetch_or of kJoiner, after
    // which continuation_core (written before it) is visible.
    if (joiner == nullptr && (c->state.load(std::memory_order_acquire) & task_core::kJoiner) != 0) {
      joiner = c->continuation_core;
    }
    if (joiner == nullptr) return;
    found_task f;
    f.core = joiner;
    f.state = shutdown_report::task_state::awaiting;
    f.site = joiner->where;
    f.name = task_name(joiner);
    f.awaits = c;
    f.awaits_site = c->where;
    f.awaits_name = task_name(c);
    out.push_back(std::move(f));
    c = joiner;
  }
}

// The extras of a registered task whose pointer is `p`, or null.  The caller
// holds every registry lock; `p` is only compared.
task_extras* find_registered(runtime_impl* rt, const task_core* p) noexcept {
  for (unsigned i = 0; i <= rt->worker_count; ++i) {
    for (task_extras* x = rt->registries[i].head; x != nullptr; x = x->reg_next) {
      if (x->reg_core == p) return x;
    }
  }
  return nullptr;
}

bool same_site(const std::source_location& a, const std::source_location& b) noexcept {
  return a.line() == b.line() && std::strcmp(a.file_name(), b.file_name()) == 0 &&
         std::strcmp(a.function_name(), b.function_name()) == 0;
}

}  // namespace

std::vector<std::unique_lock<std::mutex>> lock_registries(runtime_impl* rt) {
  std::vector<std::unique_lock<std::mutex>> locks;
  if (rt->registries == nullptr) return locks;
  locks.reserve(rt->worker_count + 1);
  for (unsigned i = 0; i <= rt->worker_count; ++i) locks.emplace_back(rt->registries[i].mu);
  return locks;
}

std::vector<found_task> walk_tasks(runtime_impl* rt, const std::vector<char>& parked,
                                   bool registries_locked) {
  using st = shutdown_report::task_state;
  std::vector<found_task> out;
  // Running: a worker not parked with a task on it.  Only its spawn site is
  // read (running_site: static data); the task itself may be gone already --
  // unless it is in the registry, whose lock the caller holds: then it has
  // not finished (see the file comment) and its name is read.
  for (unsigned i = 0; i < rt->worker_count; ++i) {
    if (parked[i] != 0) continue;
    worker* w = rt->workers[i].get();
    // Relaxed: samples, see set_current.
    const std::source_location site = w->running_site.load(std::memory_order_relaxed);
    const task_core* p = w->running_task.load(std::memory_order_relaxed);
    if (site.line() == 0 && site.file_name()[0] == '\0') continue;  // between tasks
    found_task f;
    f.core = p;
    f.state = st::running;
    f.worker = i;
    f.site = site;
    if (registries_locked && p != nullptr) {
      // The two samples may belong to different tasks: name it only when
      // the registered task has the sampled site.
      if (task_extras* x = find_registered(rt, p); x != nullptr && same_site(p->where, site)) {
        f.name = x->name;
      }
    }
    out.push_back(std::move(f));
  }
  // Queued on the injection queue: a queued task cannot run (so cannot
  // finish) before a worker pops it, under inject_mutex.
  {
    std::lock_guard lk(rt->inject_mutex);
    for (task_core* c : rt->injected) {
      task_core* o = owner_of_item(c);
      found_task f;
      f.core = o;
      f.state = st::queued;
      f.site = o->where;
      f.name = task_name(o);
      out.push_back(std::move(f));
    }
  }
  // Sleeping: the node stays in the heap until the timer thread or a
  // cancel removes it under timer_mutex; the task resumes only after that.
  {
    std::lock_guard lk(rt->timer_mutex);
    for (timer_node* node : rt->heap) {
      found_task f;
      f.core = node->core;
      f.state = st::sleeping;
      f.site = node->core->where;
      f.name = task_name(node->core);
      f.deadline = node->deadline;
      out.push_back(std::move(f));
      add_awaiting(out, node->core);
    }
  }
  // Blocked: likewise, a registered list wait leaves the list under
  // blocked_mutex before its task resumes.
  {
    std::lock_guard lk(rt->blocked_mutex);
    for (list_wait* node = rt->blocked.head; node != nullptr; node = node->reg_next) {
      found_task f;
      f.core = node->core;
      f.state = st::blocked;
      f.site = node->core->where;
      f.name = task_name(node->core);
      out.push_back(std::move(f));
      add_awaiting(out, node->core);
    }
  }
  return out;
}

// ---- the registry ----

void registry_add(runtime_impl* rt, worker* w, task_core* core) noexcept {
  // Relaxed: the task is not published yet (the caller pushes it next); no
  // other thread can see its extras.
  task_extras* x = core->extras.load(std::memory_order_relaxed);
  if (x == nullptr) {
    try {
      x = new task_extras;
    } catch (...) {
      return;  // untracked: the dump misses it, the task runs
    }
    // Relaxed: as attach_extras; the push publishes it with the task.
    core->extras.store(x, std::memory_order_relaxed);
  }
  x->reg_core = core;
  // Relaxed: unique ids only.
  x->id = rt->next_task_id.fetch_add(1, std::memory_order_relaxed);
  x->spawned_ns = now_ns();
  // The spawning task (this worker's current one) is running, so alive; a
  // tracked one's extras never change once set.
  if (w != nullptr && w->current != nullptr && w->current->tracked) {
    // Relaxed: its extras were published to this thread with the task.
    x->parent_id = w->current->extras.load(std::memory_order_relaxed)->id;
  }
  x->reg_index = w != nullptr ? w->index : rt->worker_count;
  task_registry& r = rt->registries[x->reg_index];
  std::lock_guard lk(r.mu);
  x->reg_prev = nullptr;
  x->reg_next = r.head;
  if (r.head != nullptr) r.head->reg_prev = x;
  r.head = x;
  core->tracked = true;
  // An inline join's finish then takes the atomic path (finish_inline_atomic),
  // which unregisters it: the inline path never reaches count_finish.  As a
  // simulation does for the tasks it names.
  core->hooked = true;
}

void registry_remove(task_core* core) noexcept {
  // Acquire: the extras were published with the task (or by watch_list's
  // release CAS, never for a tracked task: registry_add made them).
  task_extras* x = core->extras.load(std::memory_order_acquire);
  task_registry& r = core->rt->registries[x->reg_index];
  std::lock_guard lk(r.mu);
  if (x->reg_prev != nullptr) {
    x->reg_prev->reg_next = x->reg_next;
  } else {
    r.head = x->reg_next;
  }
  if (x->reg_next != nullptr) x->reg_next->reg_prev = x->reg_prev;
  x->reg_next = x->reg_prev = nullptr;
}

void note_cancel(task_core* core, const cancel_request* req) noexcept {
  runtime_impl* rt = core->rt;
  const bool watch = rt->wd_cancel_ns != 0;
  if (!core->tracked && !watch) return;
  std::string reason;
  try {
    reason = req->reason;
  } catch (...) {
    // No memory for the copy: the note has no reason.
  }
  const std::uint64_t now = now_ns();
  if (core->tracked) {
    // Acquire: as registry_remove.
    task_extras* x = core->extras.load(std::memory_order_acquire);
    spin_lock(x->note_lock);
    x->cancel_reason.swap(reason);
    x->cancel_where = req->where;
    x->cancel_kind_noted = req->kind;
    x->cancel_ns = now;
    // Release: pairs with spin_lock's acquire in make_dump.
    x->note_lock.store(0, std::memory_order_release);
    if (watch) {
      try {
        reason = x->cancel_reason;
      } catch (...) {
        reason.clear();
      }
    }
  }
  if (!watch) return;
  // Whichever worker runs `core` now gets the note (pointers compared only).
  for (auto& w : rt->workers) {
    // Relaxed: samples; a task that starts running after this look takes
    // the request at its start or resume (a cancellation point).  `resumes`
    // is read first: if the worker moves on between the two reads, the
    // noted resume is an older one, and the tick never matches it (a missed
    // report, never a false one).
    const std::uint64_t r = w->resumes.load(std::memory_order_relaxed);
    if (w->running_task.load(std::memory_order_relaxed) != core) continue;
    std::lock_guard lk(w->wd_mutex);
    w->wd_cancel_task = core;
    w->wd_cancel_ns = now;
    w->wd_cancel_resumes = r;
    w->wd_cancel_where = req->where;
    w->wd_cancel_kind = req->kind;
    w->wd_cancel_reason.swap(reason);
    return;
  }
}

// ---- the watchdog ----

void watchdog_tick(runtime_impl* rt, std::uint64_t now, std::unique_lock<std::mutex>& lk) {
  std::vector<std::pair<const task_core*, watchdog_report>> due;
  for (auto& wp : rt->workers) {
    worker* w = wp.get();
    // Relaxed: samples of owner-written values; staleness costs one tick.
    const task_core* p = w->running_task.load(std::memory_order_relaxed);
    const std::uint64_t r = w->resumes.load(std::memory_order_relaxed);
    if (p != w->wd_task || r != w->wd_resumes || w->wd_since_ns == 0) {
      // A new stretch (another task, or a resume since the last tick).
      w->wd_task = const_cast<task_core*>(p);
      w->wd_resumes = r;
      w->wd_since_ns = now;
      w->wd_slow_reported = false;
      w->wd_cancel_reported = false;
      // Relaxed: a sample for dump()'s since_resume.
      w->stretch_since_ns.store(p != nullptr ? now : 0, std::memory_order_relaxed);
      continue;
    }
    if (p == nullptr) continue;
    const std::uint64_t ran = now - w->wd_since_ns;
    auto report = [&](watchdog_report::kind k) {
      watchdog_report rep;
      rep.what = k;
      rep.worker = w->index;
      // Relaxed: static data, see set_current.
      rep.spawned_at = w->running_site.load(std::memory_order_relaxed);
      rep.running_for = std::chrono::nanoseconds(ran);
      return rep;
    };
    if (rt->wd_slow_ns != 0 && !w->wd_slow_reported && ran >= rt->wd_slow_ns) {
      w->wd_slow_reported = true;
      due.emplace_back(p, report(watchdog_report::kind::slow_resume));
    }
    if (rt->wd_cancel_ns != 0 && !w->wd_cancel_reported) {
      std::lock_guard wl(w->wd_mutex);
      // A request made during this resume (a resume point since would have
      // delivered it), and longer ago than the threshold.  Compared by the
      // resume count, not by time: the tick that first saw this stretch may
      // come long after the request on a busy machine.
      if (w->wd_cancel_task == p && w->wd_cancel_ns != 0 && w->wd_cancel_resumes == r &&
          now - w->wd_cancel_ns >= rt->wd_cancel_ns) {
        w->wd_cancel_reported = true;
        watchdog_report rep = report(watchdog_report::kind::slow_cancel);
        rep.cancel_reason = w->wd_cancel_reason;
        rep.cancel = w->wd_cancel_kind;
        rep.cancel_where = w->wd_cancel_where;
        rep.since_cancel = std::chrono::nanoseconds(now - w->wd_cancel_ns);
        due.emplace_back(p, std::move(rep));
      }
    }
  }
  if (due.empty()) return;
  // The hook runs without timer_mutex (and the registry lookup may not take
  // a registry lock under it: dump() takes timer_mutex under those).
  lk.unlock();
  if (rt->registries != nullptr) {
    auto locks = lock_registries(rt);
    for (auto& [p, rep] : due) {
      // Compared only; named when the registered task has the reported site
      // (the pointer may be a newer task's by now).
      if (task_extras* x = find_registered(rt, p);
          x != nullptr && same_site(p->where, rep.spawned_at)) {
        rep.id = x->id;
        rep.name = x->name;
      }
    }
  }
  for (auto& [p, rep] : due) {
    if (rt->options.watchdog.hook) {
      try {
        rt->options.watchdog.hook(rep);
      } catch (...) {
        std::fputs("weft: the watchdog hook threw; ignored\n", stderr);
      }
    } else {
      const std::string line = rep.to_string() + "\n";
      std::fputs(line.c_str(), stderr);
    }
  }
  lk.lock();
}

// ---- dump() ----

task_dump make_dump(runtime_impl* rt) {
  using fst = shutdown_report::task_state;
  using dst = task_dump::task_state;
  sim_hook::require_owner(rt, "weft::runtime::dump");
  std::vector<char> parked(rt->worker_count, 0);
  {
    std::lock_guard lk(rt->idle_mutex);
    for (worker* w : rt->sleepers) parked[w->index] = 1;
  }
  const std::uint64_t now = now_ns();
  auto since_resume = [&](unsigned i) -> std::optional<std::chrono::nanoseconds> {
    // Relaxed: a sample (the watchdog's).
    const std::uint64_t s = rt->workers[i]->stretch_since_ns.load(std::memory_order_relaxed);
    if (s == 0 || s > now) return std::nullopt;
    return std::chrono::nanoseconds(now - s);
  };
  auto deadline_of = [](std::uint64_t d) {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::nanoseconds(d)));
  };
  // The state the walk found (the awaited task's id is the caller's).
  auto apply_found = [&](task_dump::task_info& t, const found_task& f) {
    switch (f.state) {
      case fst::running:
        t.state = dst::running;
        t.worker = f.worker;
        t.since_resume = since_resume(f.worker);
        break;
      case fst::queued:
        t.state = dst::queued;
        break;
      case fst::sleeping:
        t.state = dst::sleeping;
        t.sleeping_until = deadline_of(f.deadline);
        break;
      case fst::blocked:
        t.state = dst::blocked;
        break;
      case fst::awaiting:
        t.state = dst::awaiting;
        t.awaits_name = f.awaits_name;
        t.awaits_spawned_at = f.awaits_site;
        break;
    }
  };
  task_dump out;
  // Held to the end: no tracked task finishes meanwhile (see the file comment).
  auto locks = lock_registries(rt);
  std::vector<found_task> found = walk_tasks(rt, parked, !locks.empty());
  // The walk's finds, for the tasks the registry does not hold (all of
  // them when there is no registry; the unnamed ones without track_tasks).
  auto add_found = [&](found_task& f) {
    task_dump::task_info t;
    t.name = std::move(f.name);
    t.spawned_at = f.site;
    apply_found(t, f);
    out.tasks.push_back(std::move(t));
  };
  if (locks.empty()) {
    for (found_task& f : found) add_found(f);
    return out;
  }
  out.complete = rt->options.track_tasks;
  std::unordered_map<const task_core*, const found_task*> where_found;
  for (const found_task& f : found) where_found.emplace(f.core, &f);  // the first one wins
  std::unordered_map<const task_core*, std::uint64_t> ids;
  for (unsigned i = 0; i <= rt->worker_count; ++i) {
    for (task_extras* x = rt->registries[i].head; x != nullptr; x = x->reg_next) {
      ids.emplace(x->reg_core, x->id);
    }
  }
  auto id_of = [&](const task_core* p) -> std::uint64_t {
    auto it = ids.find(p);
    return it != ids.end() ? it->second : 0;
  };
  for (unsigned i = 0; i <= rt->worker_count; ++i) {
    for (task_extras* x = rt->registries[i].head; x != nullptr; x = x->reg_next) {
      task_core* core = x->reg_core;
      task_dump::task_info t;
      t.id = x->id;
      t.name = x->name;  // immutable once published
      t.spawned_at = core->where;
      t.parent_id = x->parent_id;
      if (now >= x->spawned_ns) t.age = std::chrono::nanoseconds(now - x->spawned_ns);
      spin_lock(x->note_lock);
      if (x->cancel_ns != 0) {
        task_dump::cancel_info ci;
        ci.reason = x->cancel_reason;
        ci.kind = x->cancel_kind_noted;
        ci.where = x->cancel_where;
        ci.ago = std::chrono::nanoseconds(now >= x->cancel_ns ? now - x->cancel_ns : 0);
        // Relaxed: a sample; the request itself is not read (the task may
        // take and free it).
        ci.pending = core->pending.load(std::memory_order_relaxed) != nullptr;
        t.cancel = std::move(ci);
      }
      // Release: pairs with note_cancel's spin_lock.
      x->note_lock.store(0, std::memory_order_release);
      auto it = where_found.find(core);
      if (it != where_found.end()) {
        apply_found(t, *it->second);
        t.awaits_id = id_of(it->second->awaits);
      } else {
        // Not running, queued, sleeping or blocked by the walk: what its
        // hook says.  The hook lock keeps the wait node, or the awaited task,
        // alive (a waiter clears its hook under it before either goes).
        core->lock_hook();
        const std::uintptr_t hook = core->hook;
        if ((hook & 1) != 0) {
          auto* target = reinterpret_cast<task_core*>(hook & ~std::uintptr_t{1});
          t.state = dst::awaiting;
          t.awaits_id = id_of(target);
          t.awaits_spawned_at = target->where;
          try {
            t.awaits_name = task_name(target);
          } catch (...) {
            core->unlock_hook();
            throw;
          }
        } else if (hook != 0) {
          auto* node = reinterpret_cast<wait_node*>(hook);
          if (auto* tn = dynamic_cast<timer_node*>(node)) {
            t.state = dst::sleeping;
            t.sleeping_until = deadline_of(tn->deadline);
          } else {
            t.state = dst::blocked;
          }
        } else {
          t.state = dst::suspended;
        }
        core->unlock_hook();
      }
      out.tasks.push_back(std::move(t));
    }
  }
  // Spawn order: oldest first (the registered tasks).
  std::sort(
      out.tasks.begin(), out.tasks.end(),
      [](const task_dump::task_info& a, const task_dump::task_info& b) { return a.id < b.id; });
  if (!out.complete) {
    // Without track_tasks the registry holds the named tasks only: the rest
    // as the walk found them, each once.
    std::unordered_map<const task_core*, bool> listed;
    for (found_task& f : found) {
      if (f.core != nullptr && ids.count(f.core) != 0) continue;  // listed above
      if (f.core != nullptr && !listed.emplace(f.core, true).second) continue;
      add_found(f);
    }
  }
  return out;
}

// ---- WEFT_DUMP_ON ----

namespace {

std::mutex g_dump_mutex;  // guards the three below
std::vector<runtime_impl*>& dump_runtimes() {
  static std::vector<runtime_impl*> v;
  return v;
}
std::function<void(const std::string&)>& dump_sink() {
  static std::function<void(const std::string&)> f;
  return f;
}
bool g_dump_installed = false;
int g_dump_pipe_write = -1;  // written before the handler is installed, never after

struct signal_name {
  const char* name;
  int number;
};
constexpr signal_name kSignals[] = {
    {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGQUIT", SIGQUIT},
    {"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGTERM", SIGTERM},
};

int parse_signal(const char* text) {
  for (const signal_name& s : kSignals) {
    if (std::strcmp(text, s.name) == 0 || std::strcmp(text, s.name + 3) == 0) return s.number;
  }
  return 0;
}

// The handler: async-signal-safe only (write(2) to the pipe; errno kept).
extern "C" void on_dump_signal(int) {
  const int saved = errno;
  const char byte = 1;
  (void)!::write(g_dump_pipe_write, &byte, 1);  // full pipe: a dump is due anyway
  errno = saved;
}

void dump_all_runtimes() {
  std::lock_guard lk(g_dump_mutex);
  std::string text;
  for (runtime_impl* rt : dump_runtimes()) {
    if (rt->sim != nullptr) {
      text += "weft: a simulated runtime (only its owner thread may dump it)\n";
      continue;
    }
    try {
      text += make_dump(rt).to_string();
    } catch (...) {
      text += "weft: dump failed (no memory)\n";
    }
  }
  if (dump_runtimes().empty()) text = "weft: no live runtime to dump\n";
  if (dump_sink()) {
    dump_sink()(text);
  } else {
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
  }
}

void dump_thread_main(int read_fd) {
  char buf[64];
  for (;;) {
    const ssize_t n = ::read(read_fd, buf, sizeof buf);
    if (n > 0) {
      dump_all_runtimes();
    } else if (n < 0 && errno != EINTR) {
      return;
    }
  }
}

// Under g_dump_mutex: installs the handler and starts the thread, once per
// process; later runtimes find it installed.
void install_dump_signal() {
  if (g_dump_installed) return;
  const char* env = std::getenv("WEFT_DUMP_ON");
  if (env == nullptr || env[0] == '\0') return;
  const int sig = parse_signal(env);
  if (sig == 0) {
    std::fprintf(stderr,
                 "weft: ignoring WEFT_DUMP_ON=\"%s\" (want SIGUSR1, SIGUSR2, SIGQUIT, SIGHUP, "
                 "SIGINT or SIGTERM)\n",
                 env);
    g_dump_installed = true;  // said once
    return;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    std::fputs("weft: WEFT_DUMP_ON: no pipe; not installed\n", stderr);
    return;
  }
  // The write end never blocks the handler.
  (void)::fcntl(fds[1], F_SETFL, O_NONBLOCK);
  g_dump_pipe_write = fds[1];
  try {
    // Detached: it serves the process until it exits (it holds no runtime
    // between dumps; ~runtime unregisters under g_dump_mutex).
    std::thread(dump_thread_main, fds[0]).detach();
  } catch (...) {
    std::fputs("weft: WEFT_DUMP_ON: no thread; not installed\n", stderr);
    ::close(fds[0]);
    ::close(fds[1]);
    g_dump_pipe_write = -1;
    return;
  }
  struct sigaction sa{};
  sa.sa_handler = on_dump_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(sig, &sa, nullptr);
  g_dump_installed = true;
}

}  // namespace

void dump_start(runtime_impl* rt) {
  // Always: named tasks are registered whatever track_tasks says (a named
  // spawn allocates its extras anyway), so that the watchdog, dump() and
  // the shutdown report can name a running task.
  rt->registries = std::make_unique<task_registry[]>(rt->worker_count + 1);
  if (rt->options.track_tasks) {
    for (auto& w : rt->workers) {
      // Relaxed: before the worker threads start (their start publishes it).
      w->spawn_slow.store(true, std::memory_order_relaxed);
    }
  }
  const watchdog_options& wd = rt->options.watchdog;
  rt->wd_slow_ns = wd.slow_resume.count() <= 0
                       ? 0
                       : static_cast<std::uint64_t>(saturating_ns(wd.slow_resume).count());
  rt->wd_cancel_ns = wd.slow_cancel.count() <= 0
                         ? 0
                         : static_cast<std::uint64_t>(saturating_ns(wd.slow_cancel).count());
}

void dump_register_runtime(runtime_impl* rt) noexcept {
  std::lock_guard lk(g_dump_mutex);
  try {
    install_dump_signal();
    dump_runtimes().push_back(rt);
  } catch (...) {
    // No memory: this runtime is not dumped on the signal.
  }
}

void dump_unregister_runtime(runtime_impl* rt) noexcept {
  std::lock_guard lk(g_dump_mutex);
  auto& v = dump_runtimes();
  v.erase(std::remove(v.begin(), v.end(), rt), v.end());
}

namespace testing {
void set_dump_sink(std::function<void(const std::string&)> sink) {
  std::lock_guard lk(g_dump_mutex);
  dump_sink() = std::move(sink);
}
}  // namespace testing

}  // namespace weft::detail

namespace weft {

task_dump runtime::dump() const { return detail::make_dump(impl_); }

std::string_view to_string(task_dump::task_state s) noexcept {
  switch (s) {
    case task_dump::task_state::running:
      return "running";
    case task_dump::task_state::queued:
      return "queued";
    case task_dump::task_state::sleeping:
      return "sleeping";
    case task_dump::task_state::blocked:
      return "blocked";
    case task_dump::task_state::awaiting:
      return "awaiting";
    case task_dump::task_state::suspended:
      return "suspended";
  }
  return "?";
}

namespace {
std::string site_of(const std::source_location& w) {
  std::string s = std::string(w.file_name()) + ":" + std::to_string(w.line());
  if (w.function_name()[0] != '\0') s += std::string(" (in ") + w.function_name() + ")";
  return s;
}
std::string seconds(std::chrono::nanoseconds d) {
  char buf[32];
  const double s = static_cast<double>(d.count()) / 1e9;
  if (s < 1.0) {
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  }
  return buf;
}
std::string task_ref(std::uint64_t id, const std::string& name) {
  std::string s;
  if (id != 0) s += "#" + std::to_string(id);
  if (!name.empty()) s += (s.empty() ? "\"" : " \"") + name + "\"";
  return s.empty() ? std::string("task") : s;
}
}  // namespace

std::string task_dump::to_string() const {
  std::string out = "weft: " + std::to_string(tasks.size()) + " live task(s)" +
                    (complete ? " (all tracked):\n" : " found (track_tasks is off):\n");
  const auto now = std::chrono::steady_clock::now();
  for (const task_info& t : tasks) {
    out += "  " + task_ref(t.id, t.name) + " spawned at " + site_of(t.spawned_at);
    if (t.parent_id != 0) out += ", parent #" + std::to_string(t.parent_id);
    out += ": ";
    out += weft::to_string(t.state);
    switch (t.state) {
      case task_state::running:
        out += " on worker " + std::to_string(t.worker);
        if (t.since_resume) out += " for " + seconds(*t.since_resume);
        break;
      case task_state::sleeping:
        if (t.sleeping_until) {
          const auto left = *t.sleeping_until - now;
          out += left.count() > 0
                     ? " for " +
                           seconds(std::chrono::duration_cast<std::chrono::nanoseconds>(left)) +
                           " more"
                     : std::string(" (due)");
        }
        break;
      case task_state::awaiting:
        out += " " + task_ref(t.awaits_id, t.awaits_name) + " spawned at " +
               site_of(t.awaits_spawned_at);
        break;
      default:
        break;
    }
    if (t.cancel) {
      out += "; cancel ";
      out += t.cancel->pending ? "pending" : "delivered";
      out += " (" + std::string(weft::to_string(t.cancel->kind));
      if (!t.cancel->reason.empty()) out += ", \"" + t.cancel->reason + "\"";
      out += ", at " + std::string(t.cancel->where.file_name()) + ":" +
             std::to_string(t.cancel->where.line()) + ", " + seconds(t.cancel->ago) + " ago)";
    }
    out += "\n";
  }
  return out;
}

std::string watchdog_report::to_string() const {
  std::string s = "weft: watchdog: " + task_ref(id, name) + " spawned at " +
                  std::string(spawned_at.file_name()) + ":" + std::to_string(spawned_at.line());
  if (what == kind::slow_resume) {
    s += " has run " + seconds(running_for) + " on worker " + std::to_string(worker) +
         " without a resume point";
  } else {
    s += " has kept running " + seconds(since_cancel) + " on worker " + std::to_string(worker) +
         " after a cancel request (" + std::string(weft::to_string(cancel));
    if (!cancel_reason.empty()) s += ", \"" + cancel_reason + "\"";
    s += ", at " + std::string(cancel_where.file_name()) + ":" +
         std::to_string(cancel_where.line()) + ")";
  }
  return s;
}

}  // namespace weft
