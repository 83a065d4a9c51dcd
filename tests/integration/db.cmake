# integration_db: PgStore and StorePool against a real private PostgreSQL, started once per run
# by scripts/pg-private.sh (or the server named by QKDN_TEST_PG_DSN). One process, one server,
# a fresh database per test.
add_executable(integration_db
  integration/db_test_support.cpp
  integration/db_store_test.cpp
  integration/db_ledger_test.cpp
  integration/db_pool_test.cpp
  integration/db_outage_test.cpp
  integration/db_batch_test.cpp
  integration/db_lease_test.cpp
)
target_compile_definitions(integration_db PRIVATE
  QKDN_PG_PRIVATE_SCRIPT="${CMAKE_SOURCE_DIR}/scripts/pg-private.sh")
target_link_libraries(integration_db PRIVATE qkdn_db PkgConfig::PQXX GTest::gtest_main
                                             qkdn_options)
add_test(NAME integration_db COMMAND integration_db)
set_tests_properties(integration_db PROPERTIES LABELS integration TIMEOUT 300)
