// SPDX-License-Identifier: MIT
// runtime/blocking_pool.hpp -- the threads that run weft::blocking calls.
//
// One per runtime (runtime_impl::blocking), threads created on demand up to
// runtime_options::blocking_threads, reused, and leaving after kKeepAlive
// idle.  Calls beyond the bound wait in a FIFO queue.  Protocol steps in
// docs/architecture.md, "Blocking calls".
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "weft/blocking.hpp"
#include "weft/detail/intrusive_list.hpp"
#include "weft/runtime.hpp"

namespace weft::detail {

class blocking_pool {
 public:
  // How long an idle pool thread waits for another call before it leaves.
  static constexpr std::chrono::seconds kKeepAlive{10};

  blocking_pool() = default;
  blocking_pool(const blocking_pool&) = delete;
  blocking_pool& operator=(const blocking_pool&) = delete;
  ~blocking_pool() { stop(); }

  // Queue `job` (the pool owns one reference); starts a thread when none is
  // idle and fewer than `limit` run.  Throws std::system_error when a thread
  // cannot be started and none runs (the job is not queued then).
  void submit(blocking_job* job, unsigned limit);
  // See blocking_withdraw (weft/blocking.hpp).
  bool withdraw(blocking_job* job) noexcept;
  // Runtime shutdown, after the tasks: request the stop token of every call
  // still running, drop the queued ones (their tasks are gone), join every
  // thread.  Idempotent.
  void stop() noexcept;

 private:
  void thread_main(std::list<std::thread>::iterator self);

  using job_list = intrusive_list<blocking_job, &blocking_job::next, &blocking_job::prev>;
  std::mutex mutex_;
  std::condition_variable cv_;       // a call was queued, or stop()
  job_list queue_;                   // FIFO of calls not started (mutex_)
  job_list running_;                 // calls running now (mutex_)
  std::list<std::thread> threads_;   // live pool threads (mutex_)
  std::vector<std::thread> exited_;  // left after keep-alive, to be joined (mutex_)
  unsigned idle_ = 0;                // threads waiting for a call (mutex_)
  unsigned queued_ = 0;              // calls in the queue (mutex_)
  bool stopping_ = false;            // (mutex_)
};

// runtime_options::blocking_threads with 0 resolved to the default.
unsigned blocking_threads_of(const runtime_options& o) noexcept;

}  // namespace weft::detail
