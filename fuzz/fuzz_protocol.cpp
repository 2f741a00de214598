// libFuzzer target: the protocol decoder and the op validator. Any frame must decode to a
// message, a nack or a fatal error; any op batch must leave the scene a valid tree, and a
// refused batch must leave it unchanged.
#include "collab/protocol.hpp"
#include "collab/scene.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kiln::collab;
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  auto d = decode(frame);
  if (d.kind != Decoded::Kind::Message) return 0;
  auto* op = std::get_if<msg::Op>(&d.message);
  if (op == nullptr) return 0;
  std::vector<Op> ops;
  if (parse_batch(op->ops, 1000, ops)) return 0;
  // A fresh scene per input: a crash reproduces from the one input that found it.
  Scene s(1000);
  const auto before = s.snapshot();
  if (s.apply(ops) && s.snapshot() != before) {
    std::fprintf(stderr, "refused batch changed the scene\n");
    std::abort();
  }
  if (auto problem = s.check_invariants(); !problem.empty()) {
    std::fprintf(stderr, "invariant broken: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
