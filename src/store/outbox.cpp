#include "store/outbox.hpp"

#include "platform/ids.hpp"

namespace kiln::store::outbox {

Event append(sql::Connection& c, std::string kind, std::string project, std::string body,
             std::int64_t now_ms) {
  Event e{"e" + ids::random_hex(12), std::move(kind), std::move(project), std::move(body), now_ms};
  c.exec("INSERT INTO events (id, kind, project_id, body, created_at) VALUES ($1, $2, $3, $4, $5)",
         {e.id, e.kind, e.project, e.body, e.created_at});
  return e;
}

std::vector<Event> pending(sql::Connection& c, std::size_t limit) {
  std::vector<Event> out;
  for (const auto& r : c.exec("SELECT id, kind, project_id, body, created_at FROM events "
                              "WHERE consumed_at IS NULL ORDER BY created_at, id LIMIT $1",
                              {static_cast<std::int64_t>(limit)})
                           .rows)
    out.push_back(Event{r.str(0), r.str(1), r.str(2), r.str(3), r.i64(4)});
  return out;
}

bool consume(sql::Connection& c, const std::string& id, std::int64_t now_ms) {
  return c.exec("UPDATE events SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL",
                {id, now_ms})
             .affected > 0;
}

}  // namespace kiln::store::outbox
