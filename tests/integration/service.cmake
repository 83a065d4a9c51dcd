# integration_service: the controller service in-process (127.0.0.1:0) with fake KMs speaking
# real Ck over TCP — routing, key relay, sessions, rerouting — and, against a private PostgreSQL
# (scripts/pg-private.sh, or QKDN_TEST_PG_DSN), restart recovery of the real qkdn-controller
# binary after kill -9 (topology, thresholds, policies, schedules, pinned routes, sessions and
# 1,000 ledger rows, compared through the northbound API and the store) and store outages under
# load.
add_executable(integration_service
  ${CMAKE_CURRENT_LIST_DIR}/service_key_supply_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/service_store_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/service_leadership_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/db_test_support.cpp
)
target_compile_definitions(integration_service PRIVATE
  QKDN_PG_PRIVATE_SCRIPT="${CMAKE_SOURCE_DIR}/scripts/pg-private.sh"
  QKDN_CONTROLLER_BIN="$<TARGET_FILE:qkdn-controller>")
target_link_libraries(integration_service PRIVATE qkdn_northbound qkdn_service qkdn_db
                                                  PkgConfig::PQXX Boost::json GTest::gtest_main
                                                  qkdn_options)
add_dependencies(integration_service qkdn-controller)
add_test(NAME integration_service COMMAND integration_service)
# RUN_SERIAL: ServiceStore.InDoubtGroupCommitsLoseNothing failed twice when the suite ran it beside
# e2e tests on 2 cores (its relays did not all finish within 30 s) and never alone (24 runs);
# the cause is not found yet (see the stop note).
set_tests_properties(integration_service PROPERTIES LABELS integration TIMEOUT 600 RUN_SERIAL TRUE)
