# Interworking (issue 16): two Cxi nodes over real mutual TLS on 127.0.0.1 (port 0), with
# certificates made by OpenSSL in a temporary folder; and the peer table, pure, with injected
# time.
add_executable(integration_interworking
  ${CMAKE_CURRENT_LIST_DIR}/interworking_cxi_test.cpp
)
target_link_libraries(integration_interworking PRIVATE qkdn_interworking qkdn_net Boost::json
                      OpenSSL::SSL OpenSSL::Crypto GTest::gtest_main Threads::Threads qkdn_options)
gtest_discover_tests(integration_interworking TEST_PREFIX "interworking."
                     PROPERTIES LABELS integration TIMEOUT 120)
