#include "objects/s3_body.hpp"

#include "objects/s3_util.hpp"
#include "platform/codec.hpp"

#include <openssl/evp.h>
#include <boost/crc.hpp>

#include <algorithm>
#include <cctype>
#include <optional>

namespace kiln::objects::detail {

namespace {

// Writes a body into a store Writer and commits it with the declared digests.
class ObjectSink final : public BodySink {
 public:
  ObjectSink(std::unique_ptr<Writer> w, std::string sha, std::string md5,
             std::function<S3Response(const ObjectInfo&)> answer)
      : w_(std::move(w)), sha_(std::move(sha)), md5_(std::move(md5)), answer_(std::move(answer)) {
    if (sha_.empty()) w_->skip_sha256();  // an unsigned payload: nothing to compare with
  }
  void write(std::string_view b) override { w_->write(b); }
  void note_checksum(const std::string& name, const std::string& value) override {
    w_->set_checksum(name, value);
  }
  S3Response finish() override { return answer_(w_->commit(sha_, md5_)); }

 private:
  std::unique_ptr<Writer> w_;
  std::string sha_, md5_;
  std::function<S3Response(const ObjectInfo&)> answer_;
};

template <typename Crc>
class CrcChecksum final : public Checksum {
 public:
  explicit CrcChecksum(std::string name) { name_ = std::move(name); }
  void update(std::string_view b) override { crc_.process_bytes(b.data(), b.size()); }
  std::string raw() override {
    auto v = crc_.checksum();
    std::string out(sizeof v, '\0');
    for (std::size_t i = sizeof v; i-- > 0; v >>= 8) out[i] = static_cast<char>(v & 0xff);
    return out;
  }

 private:
  Crc crc_;
};

class DigestChecksum final : public Checksum {
 public:
  DigestChecksum(std::string name, const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    name_ = std::move(name);
    EVP_DigestInit_ex(ctx_, md, nullptr);
  }
  ~DigestChecksum() override { EVP_MD_CTX_free(ctx_); }
  DigestChecksum(const DigestChecksum&) = delete;
  DigestChecksum& operator=(const DigestChecksum&) = delete;
  void update(std::string_view b) override { EVP_DigestUpdate(ctx_, b.data(), b.size()); }
  std::string raw() override {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return std::string(reinterpret_cast<char*>(md), len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Adds a header to the inner sink's answer (the SHA-256 checksum the store verified).
class EchoSink final : public BodySink {
 public:
  EchoSink(std::unique_ptr<BodySink> inner, std::string name, std::string value)
      : inner_(std::move(inner)), name_(std::move(name)), value_(std::move(value)) {}
  void write(std::string_view b) override { inner_->write(b); }
  void note_checksum(const std::string& name, const std::string& value) override {
    inner_->note_checksum(name, value);
  }
  S3Response finish() override {
    inner_->note_checksum(name_, value_);  // checked by the store's own SHA-256 at commit
    S3Response resp;
    try {
      resp = inner_->finish();
    } catch (const Error& e) {
      // The bytes are not the ones the checksum header names: S3's code for that.
      if (e.code() != "XAmzContentSHA256Mismatch") throw;
      throw Error(400, "BadDigest",
                  "The SHA256 you specified did not match the calculated checksum.");
    }
    resp.headers.emplace_back(name_, value_);
    return resp;
  }

 private:
  std::unique_ptr<BodySink> inner_;
  std::string name_, value_;
};

// A body whose checksum was declared in a header: checked before the inner sink commits.
class ChecksumSink final : public BodySink {
 public:
  ChecksumSink(std::unique_ptr<BodySink> inner, std::unique_ptr<Checksum> sum, std::string expected)
      : inner_(std::move(inner)), sum_(std::move(sum)), expected_(std::move(expected)) {}
  void write(std::string_view b) override {
    sum_->update(b);
    inner_->write(b);
  }
  void note_checksum(const std::string& name, const std::string& value) override {
    inner_->note_checksum(name, value);
  }
  S3Response finish() override {
    const auto value = sum_->base64();
    // A value that cannot be this algorithm's (another length) is malformed, not a mismatch.
    if (!expected_.empty() && expected_.size() != value.size())
      throw Error(400, "InvalidRequest", "Value for " + sum_->name() + " header is invalid.");
    if (!expected_.empty() && value != expected_) checksum_mismatch(*sum_);
    inner_->note_checksum(sum_->name(), value);
    auto resp = inner_->finish();
    resp.headers.emplace_back(sum_->name(), value);  // as S3 does: the checksum it verified
    return resp;
  }

 private:
  std::unique_ptr<BodySink> inner_;
  std::unique_ptr<Checksum> sum_;
  std::string expected_;
};

// aws-chunked (STREAMING-UNSIGNED-PAYLOAD-TRAILER): "<hex size>\r\n<data>\r\n" ... "0\r\n"
// then trailers and "\r\n". Decodes into the inner sink.
class ChunkedSink final : public BodySink {
 public:
  // `sum`: the checksum the x-amz-trailer header announced (checked against the trailer).
  ChunkedSink(std::unique_ptr<BodySink> inner, std::unique_ptr<Checksum> sum,
              std::uint64_t decoded_length)
      : inner_(std::move(inner)), sum_(std::move(sum)), declared_(decoded_length) {}
  void write(std::string_view b) override {
    while (!b.empty()) {
      if (state_ == State::Data) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left_, b.size()));
        decoded_ += n;
        if (decoded_ > declared_)
          throw Error(400, "IncompleteBody",
                      "The aws-chunked body holds more than x-amz-decoded-content-length.");
        if (sum_) sum_->update(b.substr(0, n));
        inner_->write(b.substr(0, n));
        left_ -= n;
        b.remove_prefix(n);
        if (left_ == 0) state_ = State::DataEnd;
        continue;
      }
      line_.push_back(b.front());
      b.remove_prefix(1);
      if (line_.size() > 4096) throw Error(400, "InvalidRequest", "Malformed aws-chunked body.");
      if (!line_.ends_with("\r\n")) continue;
      const auto l = line_.substr(0, line_.size() - 2);
      line_.clear();
      if (state_ == State::DataEnd) {
        if (!l.empty()) throw Error(400, "InvalidRequest", "Malformed aws-chunked body.");
        state_ = State::Size;
      } else if (state_ == State::Size) {
        const auto semi = l.find(';');
        const auto hexsize = l.substr(0, semi);
        if (hexsize.empty() || hexsize.size() > 15 ||
            hexsize.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
          throw Error(400, "InvalidRequest", "Malformed aws-chunked size.");
        left_ = std::stoull(hexsize, nullptr, 16);
        state_ = left_ == 0 ? State::Trailers : State::Data;
      } else if (state_ == State::Trailers) {
        if (l.empty()) {
          state_ = State::Done;
        } else if (sum_) {
          const auto colon = l.find(':');
          std::string name = l.substr(0, colon);
          name = codec::ascii_lower(name);
          if (colon != std::string::npos && name == sum_->name()) {
            auto v = l.substr(colon + 1);
            while (!v.empty() && v.front() == ' ') v.erase(0, 1);
            trailer_ = v;
          }
        }
      } else {
        throw Error(400, "InvalidRequest", "Bytes after the end of an aws-chunked body.");
      }
    }
  }
  void note_checksum(const std::string& name, const std::string& value) override {
    inner_->note_checksum(name, value);
  }
  S3Response finish() override {
    if (state_ != State::Done && !(state_ == State::Trailers && line_.empty()))
      throw Error(400, "IncompleteBody", "The aws-chunked body ended early.");
    if (decoded_ != declared_)
      throw Error(400, "IncompleteBody",
                  "The aws-chunked body holds " + std::to_string(decoded_) +
                      " bytes; x-amz-decoded-content-length says " + std::to_string(declared_) +
                      ".");
    if (sum_) {
      if (!trailer_)
        throw Error(
            400, "InvalidRequest",
            "The body ended without the " + sum_->name() + " trailer x-amz-trailer announced.");
      if (sum_->base64() != *trailer_) checksum_mismatch(*sum_);
    }
    if (sum_) inner_->note_checksum(sum_->name(), *trailer_);
    auto resp = inner_->finish();
    if (sum_) resp.headers.emplace_back(sum_->name(), *trailer_);  // the checksum verified
    return resp;
  }

 private:
  enum class State { Size, Data, DataEnd, Trailers, Done };
  std::unique_ptr<BodySink> inner_;
  std::unique_ptr<Checksum> sum_;
  std::optional<std::string> trailer_;
  State state_ = State::Size;
  std::uint64_t left_ = 0;
  std::uint64_t declared_, decoded_ = 0;
  std::string line_;
};

// Collects a small XML body, then runs `fn` on it.
class XmlSink final : public BodySink {
 public:
  XmlSink(std::size_t limit, std::function<S3Response(const std::string&)> fn)
      : limit_(limit), fn_(std::move(fn)) {}
  void write(std::string_view b) override {
    if (body_.size() + b.size() > limit_)
      throw Error(400, "MaxMessageLengthExceeded", "Your request was too big.");
    body_.append(b);
  }
  S3Response finish() override { return fn_(body_); }

 private:
  std::size_t limit_;
  std::function<S3Response(const std::string&)> fn_;
  std::string body_;
};

}  // namespace

std::string Checksum::base64() {
  return codec::base64(raw());
}

std::unique_ptr<Checksum> Checksum::make(std::string_view header) {
  using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;
  using Crc64Nvme = boost::crc_optimal<64, 0xAD93D23594C93659ULL, 0xFFFFFFFFFFFFFFFFULL,
                                       0xFFFFFFFFFFFFFFFFULL, true, true>;
  const std::string h(header);
  if (h == "x-amz-checksum-crc32") return std::make_unique<CrcChecksum<boost::crc_32_type>>(h);
  if (h == "x-amz-checksum-crc32c") return std::make_unique<CrcChecksum<Crc32c>>(h);
  if (h == "x-amz-checksum-crc64nvme") return std::make_unique<CrcChecksum<Crc64Nvme>>(h);
  if (h == "x-amz-checksum-sha1") return std::make_unique<DigestChecksum>(h, EVP_sha1());
  if (h == "x-amz-checksum-sha256") return std::make_unique<DigestChecksum>(h, EVP_sha256());
  return nullptr;
}

std::string checksum_algorithm(std::string_view header) {
  std::string alg(
      header.substr(std::min(header.size(), std::string_view("x-amz-checksum-").size())));
  for (auto& ch : alg) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return alg;
}

namespace {

std::string from_base64(const std::string& b64) {
  auto raw = codec::base64_decode(b64);
  if (!raw) throw Error(400, "InvalidPart", "A part's checksum is not base64.");
  return std::move(*raw);
}

// GF(2) matrix operations for combining CRCs (the method of zlib's crc32_combine, for any
// reflected CRC whose initial value and final XOR are all ones, as S3's CRCs are): the CRC
// of A||B is the CRC of A advanced over len(B) zero bytes, XOR the CRC of B.
std::uint64_t gf2_times(const std::uint64_t* mat, std::uint64_t vec) {
  std::uint64_t sum = 0;
  for (int i = 0; vec != 0; ++i, vec >>= 1) {
    if (vec & 1) sum ^= mat[i];
  }
  return sum;
}

void gf2_square(std::uint64_t* square, const std::uint64_t* mat, int width) {
  for (int n = 0; n < width; ++n) square[n] = gf2_times(mat, mat[n]);
}

std::uint64_t crc_combine(std::uint64_t crc1, std::uint64_t crc2, std::uint64_t len2,
                          std::uint64_t reflected_poly, int width) {
  if (len2 == 0) return crc1;
  std::uint64_t odd[64], even[64];
  odd[0] = reflected_poly;  // the operator for one zero bit
  for (int n = 1; n < width; ++n) odd[n] = std::uint64_t{1} << (n - 1);
  gf2_square(even, odd, width);  // two zero bits
  gf2_square(odd, even, width);  // four
  do {  // one zero byte first, then doubling: apply the operator for each set bit of len2
    gf2_square(even, odd, width);
    if (len2 & 1) crc1 = gf2_times(even, crc1);
    len2 >>= 1;
    if (len2 == 0) break;
    gf2_square(odd, even, width);
    if (len2 & 1) crc1 = gf2_times(odd, crc1);
    len2 >>= 1;
  } while (len2 != 0);
  return crc1 ^ crc2;
}

}  // namespace

std::string multipart_checksum(std::string_view header, std::string_view type,
                               const std::vector<std::pair<std::string, std::uint64_t>>& parts) {
  const auto alg = checksum_algorithm(header);
  if (type == "COMPOSITE") {
    if (alg == "CRC64NVME")
      throw Error(400, "InvalidRequest",
                  "The COMPOSITE checksum type is not defined for CRC64NVME.");
    auto sum = Checksum::make(header);
    for (const auto& [b64, size] : parts) sum->update(from_base64(b64));
    return sum->base64() + "-" + std::to_string(parts.size());
  }
  if (type != "FULL_OBJECT")
    throw Error(400, "InvalidRequest", "x-amz-checksum-type must be COMPOSITE or FULL_OBJECT.");
  std::uint64_t poly = 0;
  int width = 32;
  if (alg == "CRC32") poly = 0xEDB88320;
  if (alg == "CRC32C") poly = 0x82F63B78;
  if (alg == "CRC64NVME") poly = 0x9A6C9329AC4BC9B5ULL, width = 64;
  if (poly == 0)
    throw Error(400, "InvalidRequest",
                "The FULL_OBJECT checksum type is defined for CRC32, CRC32C and CRC64NVME only.");
  std::uint64_t crc = 0;
  bool first = true;
  for (const auto& [b64, size] : parts) {
    const auto raw = from_base64(b64);
    if (raw.size() != static_cast<std::size_t>(width / 8))
      throw Error(400, "InvalidPart", "A part's checksum has the wrong length.");
    std::uint64_t v = 0;
    for (unsigned char c : raw) v = (v << 8) | c;  // big-endian, as S3 sends it
    crc = first ? v : crc_combine(crc, v, size, poly, width);
    first = false;
  }
  std::string raw(static_cast<std::size_t>(width / 8), '\0');
  for (std::size_t i = raw.size(); i-- > 0; crc >>= 8) raw[i] = static_cast<char>(crc & 0xff);
  return codec::base64(raw);
}

[[noreturn]] void checksum_mismatch(const Checksum& c) {
  auto alg = c.name().substr(std::string_view("x-amz-checksum-").size());
  for (auto& ch : alg) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  throw Error(400, "BadDigest",
              "The " + alg + " you specified did not match the calculated checksum.");
}

std::unique_ptr<BodySink> object_sink(std::unique_ptr<Writer> w, std::string sha256_hex,
                                      std::string md5_base64,
                                      std::function<S3Response(const ObjectInfo&)> answer) {
  return std::make_unique<ObjectSink>(std::move(w), std::move(sha256_hex), std::move(md5_base64),
                                      std::move(answer));
}
std::unique_ptr<BodySink> echo_sink(std::unique_ptr<BodySink> inner, std::string name,
                                    std::string value) {
  return std::make_unique<EchoSink>(std::move(inner), std::move(name), std::move(value));
}
std::unique_ptr<BodySink> checksum_sink(std::unique_ptr<BodySink> inner,
                                        std::unique_ptr<Checksum> sum, std::string expected) {
  return std::make_unique<ChecksumSink>(std::move(inner), std::move(sum), std::move(expected));
}
std::unique_ptr<BodySink> chunked_sink(std::unique_ptr<BodySink> inner,
                                       std::unique_ptr<Checksum> sum,
                                       std::uint64_t decoded_length) {
  return std::make_unique<ChunkedSink>(std::move(inner), std::move(sum), decoded_length);
}
std::unique_ptr<BodySink> xml_sink(std::size_t limit,
                                   std::function<S3Response(const std::string&)> fn) {
  return std::make_unique<XmlSink>(limit, std::move(fn));
}

std::unique_ptr<BodySink> checked_xml_sink(const S3Request& r, std::size_t limit,
                                           bool checksums_cover_body, bool required,
                                           std::function<S3Response(const std::string&)> fn) {
  const auto md5 = header(r, "content-md5").value_or("");
  if (!md5.empty() && (md5.size() != 24 || md5.substr(22) != "==" ||
                       md5.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                             "0123456789+/=") != std::string::npos))
    throw Error(400, "InvalidDigest", "The Content-MD5 you specified is not valid.");
  std::shared_ptr<Checksum> sum;
  std::string sum_value;
  if (checksums_cover_body) {
    for (const auto& [k, v] : r.headers) {
      if (auto made = Checksum::make(codec::ascii_lower(k))) {
        sum = std::move(made);
        sum_value = v;
      }
    }
  }
  if (required && md5.empty() && !sum)
    throw Error(400, "InvalidRequest",
                "Missing required header for this request: Content-MD5 (or x-amz-checksum-*).");
  return xml_sink(limit, [md5, sum, sum_value, fn = std::move(fn)](const std::string& body) {
    if (!md5.empty()) {
      unsigned char d[EVP_MAX_MD_SIZE];
      unsigned int n = 0;
      EVP_Digest(body.data(), body.size(), d, &n, EVP_md5(), nullptr);
      if (md5 != codec::base64(std::string_view(reinterpret_cast<char*>(d), n)))
        throw Error(400, "BadDigest",
                    "The Content-MD5 you specified did not match what we received.");
    }
    if (sum) {
      sum->update(body);
      if (sum->base64() != sum_value) checksum_mismatch(*sum);
    }
    return fn(body);
  });
}

}  // namespace kiln::objects::detail
