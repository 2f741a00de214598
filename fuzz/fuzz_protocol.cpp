// libFuzzer target: the protocol decoder and the op validator. Any frame must decode to a
// message, a nack or a fatal error; an op batch is applied to a small seeded scene and to
// the reference model (collab/scene_model.hpp): both must end with the same code and the
// same snapshot, and the tree must stay valid. A refused batch must change nothing.
#include "collab/protocol.hpp"
#include "collab/scene.hpp"
#include "collab/scene_model.hpp"

#include <boost/json/serialize.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

using namespace kiln::collab;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "%s: %s\n", what, detail.c_str());
  std::abort();
}

// The same fixed start for every input (a crash reproduces from the one input): a few
// entities in two levels, so moves, deletes and sets have something to act on.
std::vector<Op> seed_batch() {
  std::vector<Op> ops;
  auto create = [&](const char* id, const char* parent, const char* index) {
    Op op;
    op.kind = Op::Kind::Create;
    op.entity = id;
    op.parent = parent;
    op.index = index;
    op.props["name"] = id;
    ops.push_back(std::move(op));
  };
  create("a", "root", "1");
  create("b", "root", "2");
  create("c", "a", "1");
  create("d", "c", "");
  create("e", "a", "0");
  return ops;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view frame(reinterpret_cast<const char*>(data), size);
  auto d = decode(frame);
  if (d.kind != Decoded::Kind::Message) return 0;
  auto* op = std::get_if<msg::Op>(&d.message);
  if (op == nullptr) return 0;
  std::vector<Op> ops;
  if (parse_batch(op->ops, 1000, ops)) return 0;

  constexpr std::size_t kMaxEntities = 8;
  Scene s(kMaxEntities);
  model::SceneModel m(kMaxEntities);
  const auto seed = seed_batch();
  if (s.apply(seed) || m.apply(seed) != Code::Ok) fail("seed refused", "");
  const auto before = s.snapshot();

  const auto got = s.apply(ops).code;
  const auto want = m.apply(ops);
  if (got != want) fail("code differs from the reference model", std::string(to_string(got)));
  if (got != Code::Ok && s.snapshot() != before) fail("refused batch changed the scene", "");
  if (s.snapshot() != m.snapshot()) {
    fail("scene differs from the reference model", boost::json::serialize(s.snapshot()));
  }
  for (const auto& [id, e] : m.entities()) {
    if (s.children(id) != m.children(id)) fail("sibling order differs", id);
  }
  if (s.children("root") != m.children("root")) fail("sibling order differs", "root");
  if (auto problem = s.check_invariants(); !problem.empty()) fail("invariant broken", problem);
  return 0;
}
