// The upload lifecycle's rules, without storage or a database.
#include "assets/upload.hpp"

#include <gtest/gtest.h>

namespace kiln::assets {
namespace {

UploadPolicy policy() {
  UploadPolicy p;
  p.multipart_threshold = 100;
  p.part_size = 16ULL << 20;
  p.max_size = 1ULL << 50;
  p.content_types = {"model/*", "image/png"};
  return p;
}

NewUpload file(std::uint64_t size, std::string sha = std::string(64, 'a')) {
  return NewUpload{"rock.glb", "Model/GLTF-Binary", std::move(sha), size, false};
}

Errc refusal(const Result<UploadPlan>& r) {
  EXPECT_FALSE(r.has_value());
  return r.has_value() ? Errc::invalid : r.error().code;
}

TEST(PlanUpload, ASmallFileIsOneContentAddressedPut) {
  auto r = plan_upload(file(10), "u1", "p", "ann", 7, policy());
  ASSERT_TRUE(r) << r.error().detail;
  EXPECT_FALSE(r->multipart);
  EXPECT_EQ(r->upload.key, "projects/p/sha256/" + std::string(64, 'a'));
  EXPECT_EQ(r->upload.content_type, "model/gltf-binary");  // media types are case-insensitive
  EXPECT_EQ(r->upload.state, store::UploadState::Open);
  EXPECT_EQ(r->upload.created_at, 7);
  EXPECT_EQ(r->upload.part_size, 0u);
}

TEST(PlanUpload, ASinglePutNeedsItsChecksum) {
  EXPECT_EQ(refusal(plan_upload(file(10, ""), "u1", "p", "ann", 0, policy())),
            Errc::sha256_required);
  auto big = plan_upload(file(1000, ""), "u1", "p", "ann", 0, policy());  // multipart: optional
  ASSERT_TRUE(big);
  EXPECT_TRUE(big->multipart);
  EXPECT_EQ(big->upload.key, "projects/p/uploads/u1");
}

TEST(PlanUpload, PartsGrowSoThatNoUploadNeedsMoreThanTenThousand) {
  auto p = policy();
  p.part_size = 1;  // below S3's floor: raised to 5 MiB
  auto r = plan_upload(file(1000), "u", "p", "ann", 0, p);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->upload.part_size, kMinPartBytes);
  const std::uint64_t huge = 500ULL << 30;  // 500 GiB at 16 MiB would be 32,000 parts
  auto h = plan_upload(file(huge), "u", "p", "ann", 0, policy());
  ASSERT_TRUE(h);
  EXPECT_LE(huge / h->upload.part_size, kMaxParts);
  EXPECT_EQ(h->upload.part_size % (1 << 20), 0u);  // whole MiB
  auto uppy = file(1000);
  uppy.force_multipart = true;  // Uppy chooses its own parts
  EXPECT_EQ(plan_upload(uppy, "u", "p", "ann", 0, policy())->upload.part_size, 0u);
}

TEST(PlanUpload, BadInputIsRefusedWithItsReason) {
  auto with = [](auto change) {
    auto n = file(10);
    change(n);
    return refusal(plan_upload(n, "u", "p", "ann", 0, policy()));
  };
  EXPECT_EQ(with([](NewUpload& n) { n.filename = ""; }), Errc::invalid);
  EXPECT_EQ(with([](NewUpload& n) { n.filename = ".."; }), Errc::invalid);
  EXPECT_EQ(with([](NewUpload& n) { n.filename = "a/b.png"; }), Errc::invalid);
  EXPECT_EQ(with([](NewUpload& n) { n.filename = "\xE2\x80\xAEgnp.exe"; }),
            Errc::invalid);                                                        // U+202E
  EXPECT_EQ(with([](NewUpload& n) { n.filename = "\xC2\x85x"; }), Errc::invalid);  // C1
  EXPECT_EQ(with([](NewUpload& n) { n.filename = "\xFF"; }), Errc::invalid);       // not UTF-8
  EXPECT_EQ(with([](NewUpload& n) { n.content_type = "image/png; q=1"; }), Errc::invalid);
  EXPECT_EQ(with([](NewUpload& n) { n.content_type = "text/html"; }), Errc::type_not_allowed);
  EXPECT_EQ(with([](NewUpload& n) { n.sha256 = std::string(64, 'A'); }), Errc::invalid);
  auto p = policy();
  p.max_size = 9;
  EXPECT_EQ(refusal(plan_upload(file(10), "u", "p", "ann", 0, p)), Errc::too_large);
}

store::Upload multipart(std::uint64_t size, std::uint64_t part_size) {
  store::Upload u;
  u.id = "u";
  u.size = size;
  u.part_size = part_size;
  u.multipart_id = "mp";
  return u;
}

TEST(PartsToComplete, AFixedPartSizeMeansEveryPartButTheLastHasIt) {
  const auto u = multipart(25, 10);
  EXPECT_EQ(part_count(u), 3u);
  EXPECT_EQ(part_bytes(u, 1), 10u);
  EXPECT_EQ(part_bytes(u, 3), 5u);
  std::vector<s3::Part> held{{1, "\"e1\"", 10}, {2, "\"e2\"", 10}, {3, "\"e3\"", 5}};
  auto all = parts_to_complete(u, held, {});
  ASSERT_TRUE(all) << all.error().detail;
  EXPECT_EQ(all->size(), 3u);
  auto listed =
      parts_to_complete(u, held, {{1, "e1"}, {2, "\"e2\""}, {3, "e3"}});  // quotes optional
  ASSERT_TRUE(listed) << listed.error().detail;
  std::vector<s3::Part> short_part{{1, "e1", 10}, {2, "e2", 9}, {3, "e3", 5}};
  EXPECT_EQ(parts_to_complete(u, short_part, {}).error().code, Errc::part_size);
}

TEST(PartsToComplete, MissingWrongOrUnorderedPartsAreRefused) {
  const auto u = multipart(25, 10);
  std::vector<s3::Part> held{{1, "e1", 10}, {3, "e3", 5}};
  auto missing = parts_to_complete(u, held, {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::parts_missing);
  EXPECT_NE(missing.error().detail.find("Parts not uploaded yet: 2."), std::string::npos);
  std::vector<s3::Part> all{{1, "e1", 10}, {2, "e2", 10}, {3, "e3", 5}};
  EXPECT_EQ(parts_to_complete(u, all, {{2, "e2"}, {1, "e1"}}).error().code, Errc::invalid_parts);
  // Out of order is invalid whatever the store holds (not "missing" for an unknown ETag).
  EXPECT_EQ(parts_to_complete(u, all, {{2, "x"}, {1, "y"}}).error().code, Errc::invalid_parts);
  EXPECT_EQ(parts_to_complete(u, all, {{1, "e1"}, {1, "e1"}}).error().code, Errc::invalid_parts);
  EXPECT_EQ(parts_to_complete(u, all, {{1, "other"}, {2, "e2"}, {3, "e3"}}).error().code,
            Errc::parts_missing);
  EXPECT_EQ(parts_to_complete(u, all, {{1, "e1"}, {2, "e2"}}).error().code, Errc::parts_missing);
  std::vector<s3::Part> extra{{1, "e1", 10}, {2, "e2", 10}, {3, "e3", 5}, {4, "e4", 1}};
  EXPECT_EQ(parts_to_complete(u, extra, {}).error().code, Errc::parts_missing);
}

TEST(PartsToComplete, WithoutAFixedSizeTheTotalDecides) {
  const auto u = multipart(25, 0);  // Uppy's own part size
  std::vector<s3::Part> held{{1, "e1", 20}, {2, "e2", 5}};
  EXPECT_TRUE(parts_to_complete(u, held, {}));
  std::vector<s3::Part> less{{1, "e1", 20}, {2, "e2", 4}};
  EXPECT_EQ(parts_to_complete(u, less, {}).error().code, Errc::size_mismatch);
}

TEST(NeedOpen, OnlyAnOpenUploadTakesParts) {
  store::Upload u;
  EXPECT_TRUE(need_open(u));
  u.state = store::UploadState::Completed;
  EXPECT_EQ(need_open(u).error().code, Errc::completed);
  u.state = store::UploadState::Aborted;
  EXPECT_EQ(need_open(u).error().code, Errc::aborted);
}

}  // namespace
}  // namespace kiln::assets
