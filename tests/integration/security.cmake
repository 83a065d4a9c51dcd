# Security tests (issue 13, CTest label security): the TLS matrix on Ck (both ends), KMA links and ETSI GS QKD 014, and
# slow or flooding peers before authentication. The real controller service and agents run
# in-process on 127.0.0.1 with certificates made by OpenSSL in a temporary folder.
add_executable(integration_security
  ${CMAKE_CURRENT_LIST_DIR}/security_tls_matrix_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/security_slow_peers_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/security_sae_claims_test.cpp
)
# kma_wire.hpp (the KMA frame format) lives beside the agent's sources.
target_include_directories(integration_security PRIVATE ${CMAKE_SOURCE_DIR}/southbound/agent)
target_link_libraries(integration_security PRIVATE qkdn_agent qkdn_service qkdn_net Boost::json
                      OpenSSL::SSL OpenSSL::Crypto GTest::gtest_main Threads::Threads qkdn_options)
gtest_discover_tests(integration_security TEST_PREFIX "security."
                     PROPERTIES LABELS security TIMEOUT 240)
