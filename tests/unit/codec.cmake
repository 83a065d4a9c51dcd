# Ck codec unit tests (frame layer, message codec field by field against Q.4164 Tables 1-13).
add_executable(unit_codec
  unit/codec_frame_test.cpp
  unit/codec_messages_test.cpp
  unit/codec_fields_test.cpp
  unit/codec_exact_test.cpp
  unit/codec_error_test.cpp
)
target_link_libraries(unit_codec PRIVATE qkdn_southbound GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_codec PROPERTIES LABELS unit DISCOVERY_TIMEOUT 60)
