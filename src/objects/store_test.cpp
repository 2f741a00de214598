// The object store's storage on a real directory: atomic publication, digests, listing,
// hostile keys, multipart assembly and its S3 ETag, and crash leftovers.
#include "objects/store.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <fstream>
#include <sstream>

namespace kiln::objects {
namespace {

namespace fs = std::filesystem;

std::string md5_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kDigits[md[i] >> 4]);
    out.push_back(kDigits[md[i] & 15]);
  }
  return out;
}

std::string md5_raw(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::size_t files_in(const fs::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() /
           ("kiln-objects-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root);
    store = std::make_unique<Store>(root);
    store->create_bucket("media");
  }
  void TearDown() override {
    store.reset();
    fs::remove_all(root);
  }
  ObjectInfo put(const std::string& key, const std::string& data) {
    auto w = store->put("media", key, "text/plain", {{"origin", "test"}});
    w->write(data);
    return w->commit();
  }
  fs::path root;
  std::unique_ptr<Store> store;
};

TEST_F(StoreTest, PutHeadAndOverwrite) {
  auto info = put("a/b.txt", "hello");
  EXPECT_EQ(info.size, 5u);
  EXPECT_EQ(info.etag, "\"" + md5_hex("hello") + "\"");
  auto h = store->head("media", "a/b.txt");
  ASSERT_TRUE(h);
  EXPECT_EQ(read_all(h->blob), "hello");
  EXPECT_EQ(h->content_type, "text/plain");
  EXPECT_EQ(h->metadata.at("origin"), "test");
  put("a/b.txt", "second version");
  h = store->head("media", "a/b.txt");
  EXPECT_EQ(read_all(h->blob), "second version");
  EXPECT_FALSE(fs::exists(info.blob)) << "the replaced blob is removed";
  EXPECT_FALSE(store->head("media", "missing"));
  EXPECT_THROW(store->head("nobucket", "x"), Error);
}

TEST_F(StoreTest, NothingIsVisibleUntilCommitAndAbandonedBytesGo) {
  {
    auto w = store->put("media", "half", "", {});
    w->write(std::string(100'000, 'x'));
    EXPECT_FALSE(store->head("media", "half"));
  }  // dropped: a client that went away mid-upload
  EXPECT_FALSE(store->head("media", "half"));
  EXPECT_EQ(files_in(root / "tmp"), 0u);
}

TEST_F(StoreTest, DeclaredDigestsAreChecked) {
  auto w = store->put("media", "k", "", {});
  w->write("payload");
  try {
    w->commit(std::string(64, '0'), "");
    FAIL() << "a wrong SHA-256 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "XAmzContentSHA256Mismatch");
    EXPECT_EQ(e.status(), 400);
  }
  w.reset();
  EXPECT_FALSE(store->head("media", "k"));
  auto w2 = store->put("media", "k", "", {});
  w2->write("payload");
  try {
    w2->commit("", "AAAAAAAAAAAAAAAAAAAAAA==");
    FAIL() << "a wrong Content-MD5 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "BadDigest");
  }
  w2.reset();
  EXPECT_EQ(files_in(root / "tmp"), 0u);
  EXPECT_EQ(files_in(root / "blobs"), 0u);
}

TEST_F(StoreTest, HostileKeysAreRowsNotPaths) {
  for (const std::string key :
       {"../../etc/passwd", "/abs", "a//b/./c", "\xe2\x98\x83 snow", "%2e%2e"}) {
    auto info = put(key, key);
    EXPECT_EQ(fs::path(info.blob).parent_path().parent_path(), root / "blobs") << key;
    EXPECT_EQ(read_all(store->head("media", key)->blob), key);
  }
  try {
    put(std::string(1025, 'k'), "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "KeyTooLongError");
  }
  try {
    put(std::string("a\0b", 3), "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "InvalidArgument");
  }
  EXPECT_THROW(store->create_bucket("../x"), Error);
  EXPECT_THROW(store->create_bucket("UPPER"), Error);
}

TEST_F(StoreTest, ListingWithPrefixDelimiterAndPages) {
  for (const char* k : {"a.txt", "docs/1.md", "docs/2.md", "docs/sub/3.md", "img/x.png", "z"})
    put(k, k);
  auto all = store->list("media", "", "", "", 1000);
  ASSERT_EQ(all.objects.size(), 6u);
  EXPECT_FALSE(all.truncated);
  auto top = store->list("media", "", "/", "", 1000);
  std::vector<std::string> keys, prefixes = top.common_prefixes;
  for (const auto& o : top.objects) keys.push_back(o.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"a.txt", "z"}));
  EXPECT_EQ(prefixes, (std::vector<std::string>{"docs/", "img/"}));
  auto docs = store->list("media", "docs/", "/", "", 1000);
  EXPECT_EQ(docs.objects.size(), 2u);
  EXPECT_EQ(docs.common_prefixes, (std::vector<std::string>{"docs/sub/"}));
  // Pages of two, continuing after the last key or prefix returned.
  std::vector<std::string> seen;
  std::string after;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = store->list("media", "", "/", after, 2);
    for (const auto& o : page.objects) seen.push_back(o.key);
    for (const auto& p : page.common_prefixes) seen.push_back(p);
    if (!page.truncated) break;
    after = page.next_start_after;
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"a.txt", "docs/", "img/", "z"}));
}

TEST_F(StoreTest, MultipartAssemblesThePartsWithS3sEtag) {
  const std::string p1(5 << 20, 'a'), p2(5 << 20, 'b'), p3 = "tail";
  auto up = store->create_upload("media", "big.bin", "application/octet-stream", {});
  std::vector<CompletedPart> parts;
  int n = 0;
  for (const auto* p : {&p1, &p2, &p3}) {
    auto w = store->put_part("media", "big.bin", up.id, ++n);
    w->write(*p);
    parts.push_back({n, w->commit().etag, {}});
  }
  bool truncated = false;
  auto listed = store->list_parts("media", "big.bin", up.id, 0, 2, truncated);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_TRUE(truncated);
  listed = store->list_parts("media", "big.bin", up.id, 2, 2, truncated);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_FALSE(truncated);
  EXPECT_EQ(store->list_uploads("media", "big").size(), 1u);

  EXPECT_THROW(store->complete("media", "big.bin", up.id, {parts[1], parts[0], parts[2]}), Error);
  auto wrong = parts;
  wrong[1].etag = "\"00000000000000000000000000000000\"";
  try {
    store->complete("media", "big.bin", up.id, wrong);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "InvalidPart");
  }
  try {
    store->complete("media", "big.bin", up.id, {parts[0], {4, parts[0].etag, {}}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "InvalidPart");
  }
  auto info = store->complete("media", "big.bin", up.id, parts);
  EXPECT_EQ(info.size, p1.size() + p2.size() + p3.size());
  const std::string expected = "\"" + md5_hex(md5_raw(p1) + md5_raw(p2) + md5_raw(p3)) + "-3\"";
  EXPECT_EQ(info.etag, expected);
  EXPECT_EQ(read_all(store->head("media", "big.bin")->blob), p1 + p2 + p3);
  EXPECT_FALSE(fs::exists(root / "parts" / up.id));
  // Completed again (a retry after a lost answer): the same answer, nothing assembled twice;
  // once the key holds another object, the upload is gone (S3's behaviour).
  EXPECT_EQ(store->complete("media", "big.bin", up.id, parts).etag, expected);
  put("big.bin", "replaced");
  try {
    store->complete("media", "big.bin", up.id, parts);
    FAIL() << "completed over a newer object";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "NoSuchUpload");
  }
  EXPECT_EQ(read_all(store->head("media", "big.bin")->blob), "replaced");
}

TEST_F(StoreTest, ACompletionAssemblesThePartsItCheckedWhateverIsResentMeanwhile) {
  auto up = store->create_upload("media", "race.bin", "", {});
  const std::string p1(5 << 20, 'a'), p2 = "last part";
  std::vector<CompletedPart> parts;
  for (const auto& [n, bytes] : {std::pair{1, &p1}, std::pair{2, &p2}}) {
    auto w = store->put_part("media", "race.bin", up.id, n);
    w->write(*bytes);
    parts.push_back({n, w->commit().etag, {}});
  }
  // Between the ETag check and the assembly (where `finish` runs), part 2 is sent again
  // with other bytes: the object must still be the parts whose ETags were checked.
  auto info = store->complete("media", "race.bin", up.id, parts, {},
                              [&](std::map<std::string, std::string> meta, const auto&) {
                                auto w = store->put_part("media", "race.bin", up.id, 2);
                                w->write("NEW LAST PART");
                                w->commit();
                                return meta;
                              });
  EXPECT_EQ(read_all(store->head("media", "race.bin")->blob), p1 + p2);
  EXPECT_EQ(info.size, p1.size() + p2.size());
}

TEST_F(StoreTest, SmallPartsBeforeTheLastAreRefusedAndAbortCleansUp) {
  auto up = store->create_upload("media", "k", "", {});
  std::vector<CompletedPart> parts;
  for (int n = 1; n <= 2; ++n) {
    auto w = store->put_part("media", "k", up.id, n);
    w->write("small");
    parts.push_back({n, w->commit().etag, {}});
  }
  try {
    store->complete("media", "k", up.id, parts);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "EntityTooSmall");
  }
  EXPECT_THROW(store->put_part("media", "k", up.id, 0), Error);
  EXPECT_THROW(store->put_part("media", "k", up.id, 10'001), Error);
  EXPECT_THROW(store->put_part("media", "other-key", up.id, 1), Error);  // not this key's upload
  store->abort("media", "k", up.id);
  EXPECT_FALSE(fs::exists(root / "parts" / up.id));
  try {
    store->put_part("media", "k", up.id, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "NoSuchUpload");
  }
  EXPECT_FALSE(store->head("media", "k"));
}

TEST_F(StoreTest, ReadIntoCopiesARangeOfAnObject) {
  put("src", "copy me");
  auto src = store->head("media", "src");
  auto w = store->put("media", "dst", src->content_type, src->metadata);
  store->read_into(*src, 2, 3, *w);
  auto info = w->commit();
  EXPECT_EQ(info.etag, "\"" + md5_hex("py ") + "\"");
  EXPECT_EQ(read_all(store->head("media", "dst")->blob), "py ");
  EXPECT_EQ(store->head("media", "dst")->content_type, "text/plain");
  // Replaced (and its old blob removed) since it was looked up: the copy still reads the
  // bytes the lookup named, never a mix and never "no such key".
  put("src", "another");
  auto w2 = store->put("media", "x", "", {});
  store->read_into(*src, 0, src->size, *w2);
  w2->commit();
  EXPECT_EQ(read_all(store->head("media", "x")->blob), "copy me");
}

TEST_F(StoreTest, SweepRemovesWhatACrashLeftBehind) {
  put("kept", "data");
  // A crash after the rename and before the index: an unreferenced blob, and a tmp file.
  fs::create_directories(root / "blobs" / "zz");
  std::ofstream(root / "blobs" / "zz" / "zzorphan") << "junk";
  std::ofstream(root / "tmp" / "leftover") << "junk";
  EXPECT_EQ(store->sweep(std::chrono::seconds(-1)), 2u);
  EXPECT_EQ(read_all(store->head("media", "kept")->blob), "data");
  EXPECT_EQ(store->remove("media", "kept"), true);
  EXPECT_EQ(store->remove("media", "kept"), false);
  EXPECT_EQ(files_in(root / "blobs"), 0u);
}

}  // namespace
}  // namespace kiln::objects
