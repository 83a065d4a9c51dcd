# Unit tests of interworking (issue 16): the model (QKDN ID, gateway KMs, inter-QKDN links, peer
# controllers) in the topology document, its JSON and the in-memory store.
add_executable(unit_interworking
  ${CMAKE_CURRENT_LIST_DIR}/interworking_model_test.cpp
)
target_link_libraries(unit_interworking PRIVATE qkdn_core qkdn_southbound GTest::gtest_main
                                                qkdn_options)
gtest_discover_tests(unit_interworking PROPERTIES LABELS unit)
