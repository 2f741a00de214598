// The schema, as an append-only list of migrations: src/store/migrations/NNNN_name.sql,
// applied in order of NNNN (1, 2, 3... without gaps), each in its own transaction; the
// first line of each says what it does ("-- ..."). Embedded at build time
// (cmake/embed_migrations.cmake). Never edit one that has shipped: add the next. SQL there
// is the subset SQLite and PostgreSQL share (TEXT, BIGINT, ms-since-epoch timestamps as
// BIGINT set by Kiln, ids made by Kiln).
#pragma once

#include <span>

namespace kiln::store {

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

std::span<const Migration> migrations();

}  // namespace kiln::store
