# Unit tests of the agent's pure code (southbound/agent/key_store.cpp). No I/O, no sleeps:
# time points are injected, key IDs and bytes come from fixed seeds.
add_executable(unit_agent_key_store
  ${CMAKE_CURRENT_LIST_DIR}/agent_key_store_test.cpp
)
target_link_libraries(unit_agent_key_store PRIVATE qkdn_agent GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_key_store TEST_PREFIX "unit_agent_key_store." PROPERTIES LABELS unit)

# ETSI GS QKD 014 request parsing (etsi_request.cpp) and pair-naming key_IDs (sae_key_id.cpp):
# pure functions of their text.
add_executable(unit_agent_etsi
  ${CMAKE_CURRENT_LIST_DIR}/agent_etsi_test.cpp
)
target_include_directories(unit_agent_etsi PRIVATE ${CMAKE_SOURCE_DIR}/southbound/agent)
target_link_libraries(unit_agent_etsi PRIVATE qkdn_agent GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_etsi TEST_PREFIX "unit_agent_etsi." PROPERTIES LABELS unit)

# Key memory (secure_memory.cpp): the binary replaces the global operator delete with a scanner
# that finds key bytes in freed blocks; core dumps off is checked in a forked child.
add_executable(unit_agent_key_memory
  ${CMAKE_CURRENT_LIST_DIR}/agent_key_memory_test.cpp
)
target_include_directories(unit_agent_key_memory PRIVATE ${CMAKE_SOURCE_DIR}/southbound/agent)
target_link_libraries(unit_agent_key_memory PRIVATE qkdn_agent GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_key_memory TEST_PREFIX "unit_agent_key_memory." PROPERTIES LABELS unit)

# Strict reading of KMA-link messages (kma_messages.cpp): every field checked, missing is an
# error, key quantities bounded by qkdn/controller/key_limits.hpp.
add_executable(unit_agent_kma_messages
  ${CMAKE_CURRENT_LIST_DIR}/agent_kma_messages_test.cpp
)
target_include_directories(unit_agent_kma_messages PRIVATE ${CMAKE_SOURCE_DIR}/southbound/agent)
target_link_libraries(unit_agent_kma_messages PRIVATE qkdn_agent Boost::json GTest::gtest_main
                      qkdn_options)
gtest_discover_tests(unit_agent_kma_messages TEST_PREFIX "unit_agent_kma_messages." PROPERTIES LABELS unit)

# qkdn-agent's command line (options.cpp) over the shared argument parser.
add_executable(unit_agent_options
  ${CMAKE_CURRENT_LIST_DIR}/agent_options_test.cpp
)
target_compile_definitions(unit_agent_options PRIVATE
  QKDN_TEST_TOPOLOGY="${CMAKE_SOURCE_DIR}/tests/data/topologies/tokyo-qkd.json")
target_link_libraries(unit_agent_options PRIVATE qkdn_agent GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_options TEST_PREFIX "unit_agent_options." PROPERTIES LABELS unit)

# Kxi' key transfer codec (kxi_codec.cpp, ETSI GS QKD 020 ext_keys) and IWN configuration.
add_executable(unit_agent_kxi
  ${CMAKE_CURRENT_LIST_DIR}/agent_kxi_test.cpp
)
target_include_directories(unit_agent_kxi PRIVATE ${CMAKE_SOURCE_DIR}/southbound/agent)
target_link_libraries(unit_agent_kxi PRIVATE qkdn_agent GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_kxi TEST_PREFIX "unit_agent_kxi." PROPERTIES LABELS unit)
# Key combination (key_combination.cpp): X25519 (+ ML-KEM-768) exchange, HKDF checked against an
# independent RFC 5869 computation, per-pair policy rules.
add_executable(unit_agent_key_combination
  ${CMAKE_CURRENT_LIST_DIR}/agent_key_combination_test.cpp
)
target_link_libraries(unit_agent_key_combination PRIVATE qkdn_agent Boost::json OpenSSL::Crypto
                      GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_key_combination TEST_PREFIX "unit_agent_key_combination."
                     PROPERTIES LABELS unit)
# Keys wrapped to an SAE's certificate (key_wrap.cpp): against an independent ECDH + RFC 5869 +
# RFC 5649 construction (AES-KW checked on the RFC 3394 vector), wrong keys, certificate checks.
add_executable(unit_agent_key_wrap
  ${CMAKE_CURRENT_LIST_DIR}/agent_key_wrap_test.cpp
)
target_link_libraries(unit_agent_key_wrap PRIVATE qkdn_agent Boost::json OpenSSL::Crypto
                      GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_agent_key_wrap TEST_PREFIX "unit_agent_key_wrap."
                     PROPERTIES LABELS unit)
