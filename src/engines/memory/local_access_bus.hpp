// The access bus within one process (`kiln serve`): a change is handed to every handler
// on the publishing thread, in the order published.
#pragma once

#include "collab/access.hpp"

#include <mutex>
#include <vector>

namespace kiln::engines {

class LocalAccessBus final : public collab::AccessBus {
 public:
  void publish(const collab::AccessChange& change) override {
    std::vector<Handler> handlers;
    {
      std::lock_guard lock(mu_);
      handlers = handlers_;
    }
    for (auto& h : handlers) h(change);
  }
  void subscribe(Handler handler) override {
    std::lock_guard lock(mu_);
    handlers_.push_back(std::move(handler));
  }

 private:
  std::mutex mu_;
  std::vector<Handler> handlers_;
};

}  // namespace kiln::engines
