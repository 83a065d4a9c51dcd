# Unit tests of tools/psk_tls: TLS 1.3 with a QKD key as external PSK over a socketpair (both
# modes, a wrong key, a mode mismatch, an identity that is not a key_ID), and the small parsers.
add_executable(unit_psk_tls ${CMAKE_CURRENT_LIST_DIR}/psk_tls_test.cpp)
target_link_libraries(unit_psk_tls PRIVATE qkdn_psk_tls GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_psk_tls PROPERTIES LABELS "unit;security")
