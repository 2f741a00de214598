// RFC 9112 section 6 framing, case by case (the request-smuggling inputs of public reports).
#include "platform/http_framing.hpp"

#include <gtest/gtest.h>

namespace kiln::http {
namespace {

using H = std::vector<std::pair<std::string_view, std::string_view>>;

int status(const H& h) {
  auto e = framing_error(h);
  return e ? e->status : 0;
}

TEST(HttpFraming, ChunkedOrOneContentLengthFrameABody) {
  EXPECT_EQ(status({}), 0);
  EXPECT_EQ(status({{"Content-Length", "5"}}), 0);
  EXPECT_EQ(status({{"Transfer-Encoding", "chunked"}}), 0);
  EXPECT_EQ(status({{"transfer-encoding", " Chunked "}}), 0);
  EXPECT_EQ(status({{"Content-Length", "5"}, {"content-length", "5"}}), 0) << "same value twice";
}

TEST(HttpFraming, AmbiguousFramingIsRefused) {
  EXPECT_EQ(status({{"Transfer-Encoding", "gzip"}, {"Content-Length", "5"}}), 400);
  EXPECT_EQ(status({{"Content-Length", "5"}, {"Transfer-Encoding", "gzip"}}), 400);
  EXPECT_EQ(status({{"Transfer-Encoding", "chunked"}, {"Content-Length", "5"}}), 400);
  EXPECT_EQ(status({{"Transfer-Encoding", "gzip"}}), 400) << "final coding not chunked";
  EXPECT_EQ(status({{"Transfer-Encoding", "chunked, gzip"}}), 400);
  EXPECT_EQ(status({{"Transfer-Encoding", ""}}), 400);
  EXPECT_EQ(status({{"Transfer-Encoding", "gzip, chunked"}}), 501) << "a coding not implemented";
  EXPECT_EQ(status({{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}), 501);
  EXPECT_EQ(status({{"Content-Length", "5"}, {"Content-Length", "6"}}), 400);
  EXPECT_EQ(status({{"Content-Length", "5, 6"}}), 400);
  EXPECT_EQ(status({{"Content-Length", "-1"}}), 400);
  EXPECT_EQ(status({{"Content-Length", "0x10"}}), 400);
  EXPECT_EQ(status({{"Content-Length", "99999999999999999999"}}), 400);
  EXPECT_EQ(status({{"Content-Length", ""}}), 400);
}

}  // namespace
}  // namespace kiln::http
