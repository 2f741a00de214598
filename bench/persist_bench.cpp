// kiln-persist-bench: persister throughput. Fills a memory room engine with N rooms of K
// entities each, then times persister passes into a database (SQLite, or PostgreSQL
// through PgBouncer): the first pass stores every room; after one more batch in every
// room, the second stores them all again (the steady state: every room dirty once per
// interval). Prints one JSON object.
//   kiln-persist-bench --db sqlite:/tmp/x.db --rooms 2000 --entities 100
#include "engines/memory/memory_engine.hpp"
#include "persist/persister.hpp"
#include "store/database.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <future>

namespace {

using namespace kiln;

void submit(engines::MemoryRoomEngine& e, const std::string& room, const collab::Member& m,
            std::string_view batch) {
  std::vector<collab::Op> ops;
  if (collab::parse_batch(boost::json::parse(batch), 100'000, ops))
    throw std::runtime_error("bad batch");
  bool refused = false;
  e.submit(room, m, 1, std::move(ops), [&](collab::Error) { refused = true; });
  if (refused) throw std::runtime_error("batch refused");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Persister throughput"};
  std::string url;
  int rooms = 2000, entities = 100, threads = 1;
  app.add_option("--db", url, "sqlite:PATH or postgresql://...")->required();
  app.add_option("--rooms", rooms)->check(CLI::Range(1, 1'000'000));
  app.add_option("--entities", entities, "Entities per room")->check(CLI::Range(0, 100'000));
  app.add_option("--workers", threads, "Persisters in parallel (distinct holders)")
      ->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);

  store::DatabaseOptions so;
  so.url = url;
  so.pool_size = static_cast<std::size_t>(threads) + 1;
  store::Database store(so);
  store.migrate();
  engines::MemoryRoomEngine engine({}, [] { return std::string("bench"); });
  collab::Member m{"s", "u", "U", "n"};
  for (int r = 0; r < rooms; ++r) {
    const auto room = "bench/r" + std::to_string(r);
    std::promise<void> joined;
    engine.join(room, m, std::nullopt, [&](collab::JoinResult) { joined.set_value(); });
    joined.get_future().get();
    std::string batch = "[";
    for (int i = 0; i < entities; ++i) {
      batch += (i ? "," : "") + std::string(R"({"op":"create","entity":"e)") + std::to_string(i) +
               R"(","parent":"root","props":{"name":"entity )" + std::to_string(i) +
               R"(","pos":[1.5,2.5,3.5]}})";
    }
    submit(engine, room, m, batch + "]");
  }
  const auto snapshot_bytes = engine.read_room("bench/r0").value()->snapshot.size();

  auto timed_pass = [&] {
    std::vector<std::unique_ptr<persist::Persister>> ps;
    for (int t = 0; t < threads; ++t) {
      persist::PersisterOptions po;
      po.holder = "bench-" + std::to_string(t);
      po.lease = std::chrono::minutes(10);
      ps.push_back(std::make_unique<persist::Persister>(store, engine, po));
    }
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::future<persist::PassReport>> f;
    for (auto& p : ps) f.push_back(std::async(std::launch::async, [&p] { return p->pass(false); }));
    std::size_t stored = 0, failed = 0;
    for (auto& x : f) {
      auto r = x.get();
      stored += r.stored;
      failed += r.failed;
    }
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return std::tuple{stored, failed, s};
  };

  auto [stored1, failed1, s1] = timed_pass();
  for (int r = 0; r < rooms; ++r) {
    submit(engine, "bench/r" + std::to_string(r), m,
           R"([{"op":"set","entity":"e0","key":"moved","value":true}])");
  }
  auto [stored2, failed2, s2] = timed_pass();

  boost::json::object out;
  out["database"] = sql::redact(url).substr(0, url.find(':'));
  out["rooms"] = rooms;
  out["entities_per_room"] = entities;
  out["snapshot_bytes"] = snapshot_bytes;
  out["workers"] = threads;
  out["first_pass_stored"] = stored1;
  out["first_pass_s"] = s1;
  out["first_pass_rooms_per_s"] = static_cast<double>(stored1) / s1;
  out["second_pass_stored"] = stored2;
  out["second_pass_s"] = s2;
  out["second_pass_rooms_per_s"] = static_cast<double>(stored2) / s2;
  out["mib_per_s"] = static_cast<double>(stored2 * snapshot_bytes) / s2 / (1 << 20);
  out["failed"] = failed1 + failed2;
  std::printf("%s\n", boost::json::serialize(out).c_str());
  return failed1 + failed2 == 0 ? 0 : 1;
}
