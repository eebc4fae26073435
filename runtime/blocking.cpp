// SPDX-License-Identifier: MIT
// runtime/blocking.cpp -- weft::blocking: the pool and the task's side of the
// wait.  Steps by name in docs/architecture.md, "Blocking calls":
//   submit:   the task queues the call (the pool holds a reference) and
//             starts a pool thread when no idle one is left for it;
//   wait:     the task waits on the call's own wait_list, a list wait like
//             event::wait, so cancel() and shutdown interrupt it;
//   run:      a pool thread takes the call (FIFO), runs fn outside any lock;
//   finish:   under the list's lock it marks the call done and ends the wait
//             (list_wake: claim, latch, schedule_wake), then drops its
//             reference;
//   cancel:   the woken task requests fn's stop token; a call still queued
//             is withdrawn and never runs; otherwise on_cancel::wait waits
//             again (the call is ready once done) and on_cancel::abandon
//             leaves at once;
//   stop:     runtime shutdown, after its drain: request the stop tokens of
//             the calls still running, drop the queue, join the threads.
#include <string>
#include <system_error>

#include "blocking_pool.hpp"
#include "runtime_impl.hpp"
#include "threads.hpp"

namespace weft::detail {

namespace {
// Every waiter of a call's list is its one task: grant it, go on.
bool grant_all(void*) noexcept { return true; }

void finish(blocking_job* job) noexcept {
  job->list.lock();
  job->done = true;
  list_wake(&job->list, grant_all, nullptr);
  job->list.unlock();
  blocking_release(job);
}
}  // namespace

void blocking_pool::submit(blocking_job* job, unsigned limit) {
  std::vector<std::thread> to_join;
  {
    std::lock_guard lk(mutex_);
    if (stopping_) throw usage_error("weft::blocking: the runtime has shut down");
    queue_.push_back(job);
    job->queued = true;
    ++queued_;
    if (queued_ > idle_ && threads_.size() < limit) {
      try {
        auto it = threads_.emplace(threads_.end());
        try {
          // The new thread takes mutex_ first: `*it` is assigned before it runs.
          *it = std::thread([this, it] { thread_main(it); });
        } catch (...) {
          threads_.erase(it);
          throw;
        }
      } catch (...) {
        // Nobody would ever run it: take it back.  Otherwise a running
        // thread serves it later.
        if (threads_.empty()) {
          queue_.erase(job);
          job->queued = false;
          --queued_;
          throw;
        }
      }
    } else {
      cv_.notify_one();
    }
    to_join.swap(exited_);  // threads that left after their keep-alive
  }
  for (std::thread& t : to_join) t.join();
}

bool blocking_pool::withdraw(blocking_job* job) noexcept {
  {
    std::lock_guard lk(mutex_);
    if (!job->queued) return false;  // running or finished
    queue_.erase(job);
    job->queued = false;
    --queued_;
  }
  blocking_release(job);  // the pool's reference
  return true;
}

void blocking_pool::thread_main(std::list<std::thread>::iterator self) {
  name_this_thread("weft-blocking");
  std::unique_lock lk(mutex_);
  for (;;) {
    ++idle_;
    const bool got = cv_.wait_for(lk, kKeepAlive, [&] { return !queue_.empty() || stopping_; });
    --idle_;
    if (stopping_) return;  // stop() joins us
    if (!got) {
      // Idle for the keep-alive: leave; the next submit (or stop) joins us.
      exited_.push_back(std::move(*self));
      threads_.erase(self);
      return;
    }
    blocking_job* job = queue_.head;
    queue_.erase(job);
    job->queued = false;
    --queued_;
    running_.push_back(job);
    lk.unlock();
    job->run();
    lk.lock();
    running_.erase(job);
    lk.unlock();
    finish(job);
    lk.lock();
  }
}

void blocking_pool::stop() noexcept {
  std::list<std::thread> threads;
  std::vector<std::thread> exited;
  {
    std::lock_guard lk(mutex_);
    if (stopping_ && threads_.empty() && exited_.empty()) return;
    stopping_ = true;
    // Only abandoned calls still run: their tasks have finished.  Their stop
    // callbacks run here, under mutex_ (they must not call into weft::blocking).
    for (blocking_job* j = running_.head; j != nullptr; j = j->next) j->stop.request_stop();
    // Queued calls have no task left either (a waiting task holds the
    // runtime's drain): they never run.
    while (blocking_job* j = queue_.head) {
      queue_.erase(j);
      j->queued = false;
      blocking_release(j);
    }
    queued_ = 0;
    threads.swap(threads_);
    exited.swap(exited_);
    cv_.notify_all();
  }
  for (std::thread& t : threads) t.join();
  for (std::thread& t : exited) t.join();
}

unsigned blocking_threads_of(const runtime_options& o) noexcept {
  return o.blocking_threads == 0 ? runtime_options::default_blocking_threads : o.blocking_threads;
}

void blocking_submit(task_core* core, blocking_job* job) {
  runtime_impl* rt = core->rt;
  if (rt->sim != nullptr) {
    throw usage_error(
        "weft::blocking on a simulation runtime: a pool thread cannot wake a simulated task "
        "(a simulation runs on one thread and replays exactly); call the function directly, "
        "or use a threaded runtime");
  }
  rt->blocking.submit(job, blocking_threads_of(rt->options));
}

bool blocking_withdraw(task_core* core, blocking_job* job) noexcept {
  return core->rt->blocking.withdraw(job);
}

void blocking_release(blocking_job* job) noexcept {
  // acq_rel: the last release sees every write of the other holder (its fn
  // result, its list wake) before it destroys the job.
  if (job->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete job;
}

bool blocking_done(void* job) noexcept {
  // Under the list's lock, which finish() holds when it sets it.
  return static_cast<blocking_job*>(job)->done;
}

}  // namespace weft::detail
