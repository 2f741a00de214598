// A bounded pool of connections to one database. Connections open lazily, up to `size`;
// a caller waits at most `wait` for one to come free. A broken connection is dropped on
// return, so the next caller opens a fresh one (a restarted server is picked up again).
#pragma once

#include "clients/sql/sql.hpp"

#include <condition_variable>
#include <mutex>

namespace kiln::sql {

class Pool {
 public:
  Pool(std::string url, std::size_t size, ConnectOptions options, std::chrono::milliseconds wait);

  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> c) : pool_(&pool), conn_(std::move(c)) {}
    Lease(Lease&& o) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection& operator*() { return *conn_; }
    Connection* operator->() { return conn_.get(); }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  Lease acquire();  // throws Error (Timeout: none free in time; Unavailable: cannot connect)
  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] std::size_t open_connections() const;

 private:
  void give_back(std::unique_ptr<Connection> c);

  std::string url_;
  std::size_t size_;
  ConnectOptions options_;
  std::chrono::milliseconds wait_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;  // idle + leased + being opened
};

}  // namespace kiln::sql
