// Every setting Kiln understands, with its default, limits and meaning. The README's
// configuration reference is generated from this table (`kiln config doc`) and a test
// checks that the two agree.
#pragma once

#include "platform/config.hpp"

namespace kiln::app {

const config::Schema& schema();

// Each context's settings, added by the module that reads them (app/roles/*.cpp,
// app/database.cpp), in the order docs/configuration.md lists them.
void add_gateway_settings(config::Schema& s);   // gateway.*
void add_rooms_settings(config::Schema& s);     // room.*, redis.*, journal.*
void add_database_settings(config::Schema& s);  // database.*
void add_persist_settings(config::Schema& s);   // persist.*
void add_jobs_settings(config::Schema& s);      // jobs.*
void add_api_settings(config::Schema& s);       // api.*
void add_objects_settings(config::Schema& s);   // objects.*
void add_upload_settings(config::Schema& s);    // storage.*, uploads.*
void add_sandbox_settings(config::Schema& s);   // sandbox.*

// Builders for a setting of each type.
namespace setting {

using config::Setting;
using config::Type;
inline constexpr std::int64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

inline Setting integer(std::string key, std::int64_t def, std::int64_t min, std::int64_t max,
                       std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Int;
  s.default_value = std::to_string(def);
  s.min = min;
  s.max = max;
  s.help = std::move(help);
  return s;
}

inline Setting text(std::string key, std::string def, std::string help, bool allow_empty = true) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::String;
  s.default_value = std::move(def);
  s.help = std::move(help);
  s.allow_empty = allow_empty;
  return s;
}

inline Setting choice(std::string key, std::string def, std::vector<std::string> choices,
                      std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Enum;
  s.default_value = std::move(def);
  s.choices = std::move(choices);
  s.help = std::move(help);
  return s;
}

inline Setting flag(std::string key, bool def, std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Bool;
  s.default_value = def ? "true" : "false";
  s.help = std::move(help);
  return s;
}

inline Setting endpoint(std::string key, std::string def, std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Endpoint;
  s.default_value = std::move(def);
  s.help = std::move(help);
  return s;
}

}  // namespace setting

}  // namespace kiln::app
