#include "assets/json.hpp"

#include "assets/upload.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace kiln::assets {
namespace {

boost::json::value null_if_empty(const std::string& s) {
  return s.empty() ? boost::json::value(nullptr) : boost::json::value(s);
}

}  // namespace

boost::json::object upload_json(const store::Upload& u) {
  boost::json::object o{{"id", u.id},
                        {"project", u.project},
                        {"filename", u.filename},
                        {"size", u.size},
                        {"content_type", u.content_type},
                        {"sha256", null_if_empty(u.sha256)},
                        {"state", to_string(u.state)},
                        {"multipart", u.multipart()},
                        {"key", u.key},
                        {"asset", null_if_empty(u.asset_id)},
                        {"error", null_if_empty(u.error)},
                        {"created_at", u.created_at},
                        {"updated_at", u.updated_at}};
  if (u.multipart() && u.part_size > 0) {
    o["part_size"] = u.part_size;
    o["part_count"] = part_count(u);
  }
  return o;
}

boost::json::object asset_json(const store::Asset& a) {
  return {{"id", a.id},
          {"project", a.project},
          {"name", a.name},
          {"sha256", null_if_empty(a.sha256)},
          {"size", a.size},
          {"content_type", a.content_type},
          {"detected_type", null_if_empty(a.detected_type)},
          {"upload", a.upload},
          {"created_by", a.created_by},
          {"created_at", a.created_at}};
}

std::string event_json(const store::Asset& a, std::string_view type) {
  auto o = asset_json(a);
  o["type"] = type;
  return boost::json::serialize(o);
}

}  // namespace kiln::assets
