#include "clients/sql/pool.hpp"

namespace kiln::sql {

Pool::Pool(std::string url, std::size_t size, ConnectOptions options,
           std::chrono::milliseconds wait)
    : url_(std::move(url)), size_(std::max<std::size_t>(1, size)), options_(options), wait_(wait) {}

Pool::Lease::~Lease() {
  if (conn_) pool_->give_back(std::move(conn_));
}

Pool::Lease Pool::acquire() {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, wait_, [&] { return !idle_.empty() || open_ < size_; })) {
    throw Error(Error::Kind::Timeout, "no database connection came free within " +
                                          std::to_string(wait_.count()) +
                                          " ms (database.pool_size " + std::to_string(size_) +
                                          ", database.pool_timeout_ms)");
  }
  if (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(c));
  }
  ++open_;
  lock.unlock();
  try {
    return Lease(*this, connect(url_, options_));
  } catch (...) {
    lock.lock();
    --open_;
    cv_.notify_one();
    throw;
  }
}

void Pool::give_back(std::unique_ptr<Connection> c) {
  std::lock_guard lock(mu_);
  if (c->healthy()) {
    idle_.push_back(std::move(c));
  } else {
    --open_;
  }
  cv_.notify_one();
}

std::size_t Pool::open_connections() const {
  std::lock_guard lock(mu_);
  return open_;
}

}  // namespace kiln::sql
