// The repositories' part of the store conformance suite (uploads, assets, the project lock,
// the outbox): the same tests on SQLite (store_test.cpp) and on PostgreSQL through
// PgBouncer (store_itest.cpp). Include after store_conformance.hpp.
#pragma once

#include "store/asset_processing.hpp"
#include "store/assets.hpp"
#include "store/outbox.hpp"
#include "store/store_conformance.hpp"
#include "store/uploads.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

namespace kiln::store {

inline Upload an_upload(const std::string& id, const std::string& project, std::uint64_t size) {
  Upload u;
  u.id = id;
  u.project = project;
  u.user = "ann";
  u.filename = "rock.glb";
  u.size = size;
  u.content_type = "model/gltf-binary";
  u.key = "projects/" + project + "/uploads/" + id;
  u.created_at = u.updated_at = 1000;
  return u;
}

inline Asset an_asset(const std::string& id, const std::string& project, const std::string& sha,
                      std::uint64_t size) {
  return Asset{id,        project,   "rock.glb", sha,  size, "model/gltf-binary",
               "k/" + id, "u-" + id, "ann",      1000, ""};
}

TEST_P(StoreConformance, AnUploadKeepsEveryColumn) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  auto multi = an_upload("u1", "p", 123'456'789);
  multi.sha256 = std::string(64, 'a');
  multi.multipart_id = "mp-1";
  multi.part_size = 16 << 20;
  const auto single = an_upload("u2", "p", 5);  // no checksum, no multipart: NULLs
  store_->write([&](Connection& c) {
    uploads::insert(c, multi);
    uploads::insert(c, single);
  });
  store_->read({}, [&](Connection& c) {
    auto got = uploads::find(c, "p", "u1");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->size, multi.size);
    EXPECT_EQ(got->sha256, multi.sha256);
    EXPECT_EQ(got->multipart_id, "mp-1");
    EXPECT_EQ(got->part_size, multi.part_size);
    EXPECT_EQ(got->state, UploadState::Open);
    EXPECT_EQ(got->key, multi.key);
    auto plain = uploads::find(c, "p", "u2");
    ASSERT_TRUE(plain);
    EXPECT_FALSE(plain->multipart());
    EXPECT_EQ(plain->sha256, "");
    EXPECT_EQ(plain->part_size, 0u);
    EXPECT_FALSE(uploads::find(c, "other", "u1"));  // the project is part of the key
    EXPECT_EQ(uploads::project_of(c, "u2").value_or(""), "p");
    EXPECT_FALSE(uploads::project_of(c, "nope"));
  });
}

TEST_P(StoreConformance, AnUploadLeavesOpenOnceAndOnlyOnce) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  store_->write([&](Connection& c) {
    uploads::insert(c, an_upload("u1", "p", 10));
    uploads::insert(c, an_upload("u2", "p", 10));
  });
  store_->write([&](Connection& c) {
    EXPECT_TRUE(uploads::abort(c, "u1", "aborted by request", 2000));
    EXPECT_FALSE(uploads::abort(c, "u1", "stale", 3000));  // the first reason stays
    uploads::complete(c, "u1", "a1", 3000);                // aborted is final
    uploads::complete(c, "u2", "a2", 2000);
    EXPECT_FALSE(uploads::abort(c, "u2", "stale", 3000));  // completed is final
  });
  store_->read({}, [&](Connection& c) {
    auto u1 = uploads::find(c, "p", "u1");
    EXPECT_EQ(u1->state, UploadState::Aborted);
    EXPECT_EQ(u1->error, "aborted by request");
    EXPECT_EQ(u1->asset_id, "");
    auto u2 = uploads::find(c, "p", "u2");
    EXPECT_EQ(u2->state, UploadState::Completed);
    EXPECT_EQ(u2->asset_id, "a2");
  });
}

TEST_P(StoreConformance, StaleUploadsAreTheOpenIdleOnesOldestFirst) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  store_->write([&](Connection& c) {
    for (auto [id, at] : {std::pair{"u-100", 100}, {"u-50", 50}, {"u-300", 300}, {"u-60", 60}}) {
      auto u = an_upload(id, "p", 1);
      u.created_at = u.updated_at = at;
      uploads::insert(c, u);
    }
    uploads::abort(c, "u-60", "by request", 60);  // keeps its time, but is not open
  });
  std::vector<std::string> ids;
  store_->read({}, [&](Connection& c) {
    for (const auto& u : uploads::stale(c, 200, 10)) ids.push_back(u.id);
  });
  EXPECT_EQ(ids, (std::vector<std::string>{"u-50", "u-100"}));
  store_->write([&](Connection& c) { uploads::touch(c, "u-50", 250); });
  ids.clear();
  store_->read({}, [&](Connection& c) {
    for (const auto& u : uploads::stale(c, 200, 1)) ids.push_back(u.id);
  });
  EXPECT_EQ(ids, (std::vector<std::string>{"u-100"}));
}

TEST_P(StoreConformance, AProjectHoldsOneLiveAssetPerContent) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  projects_->create_project(Project{"q", "Q", "ann", 0, {}}, "ann");
  const std::string sha(64, 'b');
  store_->write([&](Connection& c) { assets::insert(c, an_asset("a1", "p", sha, 10)); });
  try {
    store_->write([&](Connection& c) { assets::insert(c, an_asset("a2", "p", sha, 10)); });
    FAIL() << "a second live asset with the same SHA-256 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Conflict) << e.what();
  }
  store_->write([&](Connection& c) {
    assets::insert(c, an_asset("a3", "q", sha, 10));  // another project: its own copy
    assets::insert(c, an_asset("a4", "p", "", 10));   // no checksum: never a duplicate
    assets::insert(c, an_asset("a5", "p", "", 10));
    EXPECT_EQ(assets::by_sha256(c, "p", sha)->id, "a1");
    assets::mark_deleted(c, "a1", 2000);
    EXPECT_FALSE(assets::by_sha256(c, "p", sha));
    assets::insert(c, an_asset("a6", "p", sha, 10));  // the content may come back
  });
  store_->read({}, [&](Connection& c) {
    EXPECT_FALSE(assets::find(c, "p", "a1"));             // deleted
    EXPECT_EQ(assets::by_id(c, "a1")->name, "rock.glb");  // still named by its upload
    EXPECT_EQ(assets::by_sha256(c, "p", sha)->id, "a6");
    EXPECT_FALSE(assets::find(c, "q", "a6"));  // not another project's
  });
}

TEST_P(StoreConformance, AnAssetsProcessingIsOneRowPerPipelineVersion) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  store_->write([&](Connection& c) {
    assets::insert(c, an_asset("a1", "p", std::string(64, 'c'), 10));
    asset_processing::put(c,
                          {"a1", "kiln-lod/1", "p", "processing", "lod", 30, "", 0, "", "", 1000});
    asset_processing::put(
        c, {"a1", "kiln-lod/1", "p", "ready", "", 100, "d/p/x/manifest.json", 5, "", "", 2000});
    asset_processing::put(c, {"a1", "kiln-lod/2", "p", "failed", "import", 10, "", 0, "malformed",
                              "index 7 is out of range", 3000});
  });
  store_->read({}, [&](Connection& c) {
    const auto r = asset_processing::find(c, "a1", "kiln-lod/1");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->state, "ready");
    EXPECT_EQ(r->manifest_key, "d/p/x/manifest.json");
    EXPECT_EQ(r->levels, 5);
    EXPECT_EQ(r->percent, 100);
    EXPECT_EQ(r->error_code, "");
    EXPECT_EQ(r->updated_at, 2000);
    const auto all = asset_processing::of_asset(c, "a1");
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[1].error, "index 7 is out of range");
    EXPECT_FALSE(asset_processing::find(c, "a2", "kiln-lod/1"));
  });
  try {
    store_->write([&](Connection& c) {
      asset_processing::put(c, {"a1", "kiln-lod/1", "p", "exploded", "", 0, "", 0, "", "", 1});
    });
    FAIL() << "a state outside the five was accepted";
  } catch (const Error&) {
  }
  store_->write([&](Connection& c) { asset_processing::remove(c, "a1"); });
  store_->read({},
               [&](Connection& c) { EXPECT_TRUE(asset_processing::of_asset(c, "a1").empty()); });
}

TEST_P(StoreConformance, RequeuingAnAssetStartsOneRunAtATime) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  const auto requeue = [&] {
    bool mine = false;
    store_->write(
        [&](Connection& c) { mine = asset_processing::requeue(c, "a1", "v1", "p", 1000); });
    return mine;
  };
  const auto set = [&](const char* state) {
    store_->write([&](Connection& c) {
      asset_processing::put(c, {"a1", "v1", "p", state, "", 0, "", 0, "", "", 500});
    });
  };
  EXPECT_TRUE(requeue()) << "no row: this call queues it";
  EXPECT_FALSE(requeue()) << "queued already";
  set("processing");
  EXPECT_FALSE(requeue());
  set("ready");
  EXPECT_FALSE(requeue());
  set("failed");
  EXPECT_TRUE(requeue());
  store_->read({}, [&](Connection& c) {
    const auto r = asset_processing::find(c, "a1", "v1");
    EXPECT_EQ(r->state, "queued");
    EXPECT_EQ(r->error, "");
    EXPECT_EQ(r->updated_at, 1000);
  });
  set("skipped");
  EXPECT_TRUE(requeue());
}

TEST_P(StoreConformance, AssetsPageByIdAndKeysAreInUseWhileLive) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  store_->write([&](Connection& c) {
    for (const char* id : {"a3", "a1", "a2", "a4"}) assets::insert(c, an_asset(id, "p", "", 1));
    assets::mark_deleted(c, "a2", 2000);
  });
  store_->read({}, [&](Connection& c) {
    auto first = assets::page(c, "p", "", 2);
    ASSERT_EQ(first.size(), 2u);
    EXPECT_EQ(first[0].id, "a1");
    EXPECT_EQ(first[1].id, "a3");  // a2 is deleted
    auto rest = assets::page(c, "p", first.back().id, 2);
    ASSERT_EQ(rest.size(), 1u);
    EXPECT_EQ(rest[0].id, "a4");
    EXPECT_TRUE(assets::key_in_use(c, "k/a1"));
    EXPECT_FALSE(assets::key_in_use(c, "k/a2"));
    EXPECT_FALSE(assets::key_in_use(c, "k/none"));
  });
}

TEST_P(StoreConformance, BytesInUseAreLiveAssetsAndOpenUploads) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  projects_->create_project(Project{"q", "Q", "ann", 0, {}}, "ann");
  store_->write([&](Connection& c) {
    EXPECT_EQ(assets::bytes_in_use(c, "p"), 0u);
    assets::insert(c, an_asset("a1", "p", "", 5'000'000'000));  // past 32 bits
    assets::insert(c, an_asset("a2", "p", "", 7));
    assets::insert(c, an_asset("a3", "q", "", 1000));  // another project's
    assets::mark_deleted(c, "a2", 2000);
    uploads::insert(c, an_upload("u1", "p", 11));
    uploads::insert(c, an_upload("u2", "p", 13));
    uploads::abort(c, "u2", "by request", 2000);
    EXPECT_EQ(assets::bytes_in_use(c, "p"), 5'000'000'011u);
  });
}

TEST_P(StoreConformance, TheProjectLockSaysWhetherTheProjectIsLive) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  projects_->create_project(Project{"gone", "G", "ann", 0, {}}, "ann");
  bool found = false;
  projects_->delete_project("gone", found);
  ASSERT_TRUE(found);
  store_->write([&](Connection& c) {
    EXPECT_TRUE(projects::lock(c, "p"));
    EXPECT_FALSE(projects::lock(c, "gone"));
    EXPECT_FALSE(projects::lock(c, "never"));
  });
}

// The quota promise (docs/uploads.md): concurrent uploads never reserve more than the
// quota, because each decides under the project's lock. Writer A takes the lock, reads the
// usage and then waits (bounded) for writer B to read it too; B can only do so if the lock
// did not stop it (PostgreSQL's read committed would show B the same usage as A, and both
// would insert). With the lock, B reads after A's commit and refuses.
TEST_P(StoreConformance, QuotaDecisionsUnderTheProjectLockNeverOvershoot) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  constexpr std::uint64_t kQuota = 100;
  std::mutex mu;
  std::condition_variable cv;
  bool a_decided = false;
  bool b_read = false;
  auto reserve = [&](const std::string& id, bool first) {
    bool inserted = false;
    store_->write([&](Connection& c) {
      EXPECT_TRUE(projects::lock(c, "p"));
      const auto used = assets::bytes_in_use(c, "p");
      std::unique_lock lock(mu);
      if (first) {
        a_decided = true;
        cv.notify_all();
        // Long enough for an unblocked B to read (it needs one round trip); a blocked B
        // never does, and the wait only costs its bound.
        cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return b_read; });
      } else {
        b_read = true;
        cv.notify_all();
      }
      lock.unlock();
      if (used + kQuota > kQuota) return;
      uploads::insert(c, an_upload(id, "p", kQuota));
      inserted = true;
    });
    return inserted;
  };
  bool a = false;
  bool b = false;
  std::thread writer_a([&] { a = reserve("u-a", true); });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return a_decided; }));
  }
  std::thread writer_b([&] { b = reserve("u-b", false); });
  writer_a.join();
  writer_b.join();
  EXPECT_TRUE(a);
  EXPECT_FALSE(b) << "B reserved while A held the project's lock: the quota is overshot";
  std::uint64_t used = 0;
  store_->read({}, [&](Connection& c) { used = assets::bytes_in_use(c, "p"); });
  EXPECT_EQ(used, kQuota);
}

TEST_P(StoreConformance, OutboxEventsCommitWithTheirChangeOrNotAtAll) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  try {
    store_->write([&](Connection& c) {
      outbox::append(c, "asset.uploaded", "p", R"({"id":"lost"})", 1000);
      throw std::runtime_error("the change failed after its event was written");
    });
  } catch (const std::runtime_error&) {
  }
  std::vector<Event> appended;
  store_->write([&](Connection& c) {
    appended.push_back(outbox::append(c, "asset.uploaded", "p", R"({"n":1})", 1000));
    appended.push_back(outbox::append(c, "asset.deleted", "p", R"({"n":2})", 1001));
    appended.push_back(outbox::append(c, "asset.uploaded", "p", R"({"n":3})", 1002));
  });
  std::vector<Event> pending;
  store_->read({}, [&](Connection& c) { pending = outbox::pending(c, 10); });
  ASSERT_EQ(pending.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(pending[i].id, appended[i].id);
    EXPECT_EQ(pending[i].body, appended[i].body);
    EXPECT_EQ(pending[i].kind, appended[i].kind);
  }
  store_->read({}, [&](Connection& c) { EXPECT_EQ(outbox::pending(c, 2).size(), 2u); });
}

}  // namespace kiln::store
