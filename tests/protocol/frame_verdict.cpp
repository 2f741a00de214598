// Prints what Kiln's codec (collab/protocol.hpp, collab/ops.hpp) makes of each file named on
// the command line: one JSON line per file, {"file":..., "verdict":"accept"|"nack"|"fatal",
// "message":...}. A frame is accepted when it decodes to a message and, for an `op`, its
// batch parses (at most the default 1,000 ops). tests/protocol/schema_conformance.mjs
// compares these verdicts with the JSON Schema in protocol/.
#include "collab/ops.hpp"
#include "collab/protocol.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <variant>
#include <vector>

namespace {

std::string verdict(const std::string& frame, std::string& message) {
  using kiln::collab::Decoded;
  auto d = kiln::collab::decode(frame);
  if (d.kind != Decoded::Kind::Message) {
    message = d.error.message;
    return d.kind == Decoded::Kind::Nack ? "nack" : "fatal";
  }
  if (const auto* op = std::get_if<kiln::collab::msg::Op>(&d.message)) {
    std::vector<kiln::collab::Op> ops;
    if (auto e = kiln::collab::parse_batch(op->ops, 1000, ops)) {
      message = e.message;
      return "nack";
    }
  }
  return "accept";
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    if (!in) {
      std::cerr << "frame_verdict: cannot read " << argv[i] << "\n";
      return 2;
    }
    std::string frame((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string message;
    auto v = verdict(frame, message);
    std::cout << "{\"file\":" << boost::json::serialize(boost::json::string(argv[i]))
              << ",\"verdict\":\"" << v
              << "\",\"message\":" << boost::json::serialize(boost::json::string(message)) << "}\n";
  }
  return 0;
}
