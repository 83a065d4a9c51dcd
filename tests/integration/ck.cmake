# Ck server integration tests: the controller service in-process on 127.0.0.1:0, raw TCP and TLS
# clients with hand-built frames (ck-protocol.md clauses 1, 2 and 5).
add_executable(integration_ck
  ${CMAKE_CURRENT_LIST_DIR}/ck_protocol_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/ck_tls_test.cpp
)
target_link_libraries(integration_ck PRIVATE qkdn_service GTest::gtest_main qkdn_options)
target_compile_definitions(integration_ck PRIVATE QKDN_SOURCE_DIR="${CMAKE_CURRENT_LIST_DIR}/../..")
gtest_discover_tests(integration_ck PROPERTIES LABELS integration TIMEOUT 120)

# Backpressure and per-KM limits (issues 12 and 13): a KM flooding 10,000 frames/s is refused
# busy and disconnected while another KM keeps its answers; registrations beyond the admission
# queue are told to come back (NG: busy, retry_after_ms).
add_executable(integration_ck_backpressure
  ${CMAKE_CURRENT_LIST_DIR}/ck_backpressure_test.cpp
)
target_link_libraries(integration_ck_backpressure PRIVATE qkdn_service GTest::gtest_main qkdn_options)
gtest_discover_tests(integration_ck_backpressure PROPERTIES LABELS "integration;fault;security" TIMEOUT 120)
