// Runtime internals for translation units that already speak Asio.
#pragma once

#include "platform/runtime.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <functional>
#include <memory>
#include <vector>

namespace kiln {

struct Runtime::Impl {
  // A signal set that re-arms after each signal, so a second SIGTERM is seen too.
  struct SignalWatcher {
    SignalWatcher(boost::asio::io_context& io, std::function<void(int)> f)
        : set(io), fn(std::move(f)) {}
    boost::asio::signal_set set;
    std::function<void(int)> fn;
    void arm() {
      set.async_wait([this](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        fn(sig);
        arm();
      });
    }
  };
  boost::asio::io_context io;
  std::vector<std::unique_ptr<SignalWatcher>> watchers;
  explicit Impl(int threads) : io(threads) {}
};

}  // namespace kiln
