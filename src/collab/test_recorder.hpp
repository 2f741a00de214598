// A recording Subscriber for tests of the hub and the room engines: it keeps every frame
// delivered and lets a test wait (bounded) for the frames it expects.
#pragma once

#include "collab/hub.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::collab::conformance {

namespace json = boost::json;
inline constexpr auto kWait = std::chrono::seconds(10);

struct Recorder : Subscriber {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> frames;
  int lost = 0;
  void deliver(std::shared_ptr<const std::string> f) override {
    std::lock_guard lock(mu);
    frames.push_back(*f);
    cv.notify_all();
  }
  void lost_sync(const std::string&) override {
    std::lock_guard lock(mu);
    ++lost;
    cv.notify_all();
  }
  std::vector<json::object> of_type(std::string_view t) {
    std::lock_guard lock(mu);
    return of_type_locked(t);
  }
  // Waits until at least n frames of type t have arrived; returns them. A wait that runs
  // out fails the test here, saying what was awaited (the caller's checks add what is wrong).
  std::vector<json::object> wait_for(std::string_view t, std::size_t n) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, kWait, [&] { return of_type_locked(t).size() >= n; })) {
      ADD_FAILURE() << "waited " << kWait.count() << " s for " << n << " '" << t << "' frames; "
                    << of_type_locked(t).size() << " came";
    }
    return of_type_locked(t);
  }

 private:
  std::vector<json::object> of_type_locked(std::string_view t) {
    std::vector<json::object> out;
    for (const auto& f : frames) {
      auto o = json::parse(f).as_object();
      if (o.at("t").as_string() == t) out.push_back(o);
    }
    return out;
  }
};

}  // namespace kiln::collab::conformance
