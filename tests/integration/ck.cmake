# Ck server integration tests: the controller service in-process on 127.0.0.1:0, raw TCP and TLS
# clients with hand-built frames (ck-protocol.md clauses 1, 2 and 5).
add_executable(integration_ck
  ${CMAKE_CURRENT_LIST_DIR}/ck_protocol_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/ck_tls_test.cpp
)
target_link_libraries(integration_ck PRIVATE qkdn_service GTest::gtest_main qkdn_options)
target_compile_definitions(integration_ck PRIVATE QKDN_SOURCE_DIR="${CMAKE_CURRENT_LIST_DIR}/../..")
gtest_discover_tests(integration_ck PROPERTIES LABELS integration TIMEOUT 120)
