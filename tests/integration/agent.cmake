# qkdn-agent integration tests: the agent library in-process against a minimal fake controller
# (plain TCP on 127.0.0.1, port 0), KMA links over real sockets; agent_supply_test.cpp runs the
# REAL controller service in-process (no DB) with real agents and drives SAE key supply.
add_executable(integration_agent
  ${CMAKE_CURRENT_LIST_DIR}/agent_ck_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/agent_links_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/agent_keysupply_relay_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/agent_supply_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/agent_peer_input_test.cpp
)
# agent_supply_test.cpp constructs AgentCore (southbound/agent/km_host.hpp) directly.
target_include_directories(integration_agent PRIVATE ${CMAKE_SOURCE_DIR}/southbound/agent)
target_link_libraries(integration_agent PRIVATE qkdn_agent qkdn_service qkdn_southbound Boost::json
                      OpenSSL::Crypto GTest::gtest_main Threads::Threads qkdn_options)
gtest_discover_tests(integration_agent TEST_PREFIX "integration_agent." PROPERTIES LABELS integration TIMEOUT 180)
