// S3 clients for worker threads: a Client is blocking and single-threaded, so each call
// borrows one (idle ones are kept, at most `keep`; more are made when all are lent).
#pragma once

#include "clients/s3/client.hpp"

#include <memory>
#include <mutex>
#include <vector>

namespace kiln::s3 {

class ClientPool {
 public:
  ClientPool(ClientOptions options, std::size_t keep) : options_(std::move(options)), keep_(keep) {}

  class Lease {
   public:
    Lease(ClientPool& owner, std::unique_ptr<Client> c) : owner_(owner), c_(std::move(c)) {}
    ~Lease() { owner_.give_back(std::move(c_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Client* operator->() { return c_.get(); }
    Client& operator*() { return *c_; }

   private:
    ClientPool& owner_;
    std::unique_ptr<Client> c_;
  };

  Lease take() {
    std::unique_ptr<Client> c;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        c = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!c) c = std::make_unique<Client>(options_);
    return Lease(*this, std::move(c));
  }

 private:
  void give_back(std::unique_ptr<Client> c) {
    std::lock_guard lock(mu_);
    if (idle_.size() < keep_) idle_.push_back(std::move(c));
  }
  ClientOptions options_;
  std::size_t keep_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Client>> idle_;
};

}  // namespace kiln::s3
