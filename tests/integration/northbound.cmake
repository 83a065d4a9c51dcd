# integration_northbound: the northbound API over real HTTP on 127.0.0.1:0 against an in-process
# controller service (insecure Ck, inline topology; KMs register with raw Ck clients).
add_executable(integration_northbound
  ${CMAKE_CURRENT_LIST_DIR}/northbound_api_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/northbound_security_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/northbound_ui_test.cpp
)
target_link_libraries(integration_northbound PRIVATE qkdn_northbound qkdn_service Boost::json
                                                     GTest::gtest_main qkdn_options)
gtest_discover_tests(integration_northbound PROPERTIES LABELS integration TIMEOUT 120)

# integration_northbound_db: the API on a real private PostgreSQL (scripts/pg-private.sh, or the
# server named by QKDN_TEST_PG_DSN): persistence across restarts, 503 while the store is down.
add_executable(integration_northbound_db
  ${CMAKE_CURRENT_LIST_DIR}/northbound_store_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/db_test_support.cpp
)
target_compile_definitions(integration_northbound_db PRIVATE
  QKDN_PG_PRIVATE_SCRIPT="${CMAKE_SOURCE_DIR}/scripts/pg-private.sh")
target_link_libraries(integration_northbound_db PRIVATE qkdn_northbound qkdn_service qkdn_db
                                                        PkgConfig::PQXX Boost::json
                                                        GTest::gtest_main qkdn_options)
add_test(NAME integration_northbound_db COMMAND integration_northbound_db)
set_tests_properties(integration_northbound_db PROPERTIES LABELS integration TIMEOUT 300)
