// The process's event loop: an Asio io_context run by a fixed set of threads, plus signal
// handling and timers, behind a plain interface so that most code never includes Asio.
#pragma once

#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>

namespace kiln {

class Runtime {
 public:
  explicit Runtime(int threads);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Runs the loop on `threads` threads (the caller's included) until stop().
  void run();
  void stop();
  // After run() has returned: runs the handlers that are ready now (closing connections,
  // failing their pending callbacks) so that nothing is left holding references at exit.
  void run_ready_handlers();
  void post(std::function<void()> fn);
  // Calls fn(signal) on the loop each time one of the signals arrives.
  void on_signals(std::initializer_list<int> signals, std::function<void(int)> fn);
  // Calls fn once after `delay` on the loop (not cancellable: fn checks its own state).
  void after(std::chrono::milliseconds delay, std::function<void()> fn);
  [[nodiscard]] int threads() const { return threads_; }

  struct Impl;  // defined in runtime_asio.hpp, for the few files that speak Asio
  Impl& impl() { return *impl_; }

 private:
  int threads_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
