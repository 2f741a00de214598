#include "platform/runtime.hpp"

#include "platform/runtime_asio.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <thread>

namespace kiln {

namespace asio = boost::asio;

Runtime::Runtime(int threads)
    : threads_(threads < 1 ? 1 : threads), impl_(std::make_unique<Impl>(threads_)) {}

Runtime::~Runtime() = default;

void Runtime::run() {
  auto work = asio::make_work_guard(impl_->io);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads_; ++i) {
    pool.emplace_back([this] { impl_->io.run(); });
  }
  impl_->io.run();
  for (auto& t : pool) t.join();
}

void Runtime::stop() {
  impl_->io.stop();
}

void Runtime::run_ready_handlers() {
  impl_->io.restart();
  // Bounded: handlers may post more handlers; a few rounds are plenty for a shutdown.
  for (int round = 0; round < 16 && impl_->io.poll() > 0; ++round) {
  }
}

void Runtime::post(std::function<void()> fn) {
  asio::post(impl_->io, std::move(fn));
}

void Runtime::on_signals(std::initializer_list<int> signals, std::function<void(int)> fn) {
  auto w = std::make_unique<Impl::SignalWatcher>(impl_->io, std::move(fn));
  for (int s : signals) w->set.add(s);
  w->arm();
  impl_->watchers.push_back(std::move(w));
}

void Runtime::after(std::chrono::milliseconds delay, std::function<void()> fn) {
  auto timer = std::make_shared<asio::steady_timer>(impl_->io, delay);
  timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (!ec) fn();
  });
}

}  // namespace kiln
