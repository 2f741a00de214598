// The JobQueue conformance suite on the database adapter over PostgreSQL 15 through
// PgBouncer in transaction mode: concurrent leasers meet FOR UPDATE SKIP LOCKED, concurrent
// enqueues with one key meet the unique index. Servers: the `postgres` CTest fixture.
#include "jobs/queue_conformance.hpp"
#include "jobs/test_queue.hpp"
#include "store/test_pg.hpp"

namespace kiln::jobs {
namespace {

INSTANTIATE_TEST_SUITE_P(PostgresViaPgBouncer, QueueConformance,
                         ::testing::Values(QueueFactory{
                             "postgres", [] { return make_database_harness(store::fresh_pg()); }}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::jobs
